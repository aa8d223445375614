"""
Safe file writing for every script, without torch (prepare.py needs it too): a file or directory appears only when
complete, an existing one is replaced only by a complete new one, and a run holds a lock on its out_dir.

    with atomic_path('out/run/curves.png') as tmp: fig.savefig(tmp)   # renamed into place when the block ends
    write_json(path, obj); write_jsonl(path, rows)                     # the same, for JSON
    with run_lock(out_dir): ...                                        # a second run into out_dir stops at start
    with full_disk_is_user_error(path, 'nothing was replaced'): ...   # a full disk: one line, not a traceback

Every temp name is <dir>/.tmp-<pid>-<name>, so a later run knows the ones a killed process left and
removes them. read_records(path) reads a JSON-lines log back, skipping the lines a crash tore.
"""

import contextlib
import errno
import fcntl
import json
import os
import shutil

from configurator import UserError

TEMP_PREFIX = '.tmp-'


def temp_path(path):
    """This process's temp name for path: <dir>/.tmp-<pid>-<name>, beside it (what remove_stale_temps reads back)."""
    directory, name = os.path.split(path)
    return os.path.join(directory, f"{TEMP_PREFIX}{os.getpid()}-{name}")


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temp name beside path to write to; renamed to path when the block ends without an error, removed
    otherwise: a crash never leaves half a file, and never touches an existing one. A temp file that a killed
    process (SIGKILL) could not remove is removed by the next run in that directory (remove_stale_temps)."""
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, obj):
    with atomic_path(path) as tmp, open(tmp, 'w', encoding='utf-8') as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)


def write_jsonl(path, rows):
    with atomic_path(path) as tmp, open(tmp, 'w', encoding='utf-8') as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + '\n' for row in rows)


def swap_in(new, path, old):
    """Move the complete directory new to path. An existing path is renamed to old first (and put back if the move
    fails), then removed: at every moment path is either the old directory or the new one."""
    if not os.path.exists(path):
        os.replace(new, path)
        return
    os.replace(path, old)
    try:
        os.replace(new, path)
    except OSError:
        os.replace(old, path)
        raise
    shutil.rmtree(old)


@contextlib.contextmanager
def fresh_directory(path):
    """Yields an empty directory beside path (.tmp-<pid>-<name>) to build in. When the block ends it becomes path;
    an existing path is renamed away only then, and removed once the new one is in place. On an error the temp
    directory is removed and path is left as it was."""
    tmp = temp_path(os.path.abspath(path))
    shutil.rmtree(tmp, ignore_errors=True)  # left by an earlier process that had our pid
    os.makedirs(tmp)
    try:
        yield tmp
        swap_in(tmp, path, tmp + '.old')
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_records(path, complete=False):
    """(records, torn line numbers) of a metrics log: the lines that are JSON objects, in order; a line torn by a
    crash or a full disk is skipped (complete: and so is a last line without its newline, one being written)."""
    records, torn = [], []
    with open(path, encoding='utf-8', errors='replace') as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if isinstance(record, dict) and (line.endswith('\n') or not complete):
                records.append(record)
            else:
                torn.append(n)
    return records, torn


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except PermissionError:  # alive, another user's
        return True
    except (ProcessLookupError, OverflowError, ValueError):  # gone, or not a pid this system can have
        return False
    return True


def remove_stale_temps(directory):
    """Remove the temp files (atomic_path) and directories (a sharded checkpoint being written) that processes no
    longer alive left in directory; returns their names."""
    removed = []
    for name in os.listdir(directory) if os.path.isdir(directory) else ():
        pid = name[len(TEMP_PREFIX):].split('-', 1)[0]
        if name.startswith(TEMP_PREFIX) and pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            path = os.path.join(directory, name)
            with contextlib.suppress(OSError):
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
                removed.append(name)
    return removed


def write_failed(e):
    """Whether an error of a write means the disk (or a file-size limit) is full."""
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
    return isinstance(e, RuntimeError) and any(s in str(e) for s in ('unexpected pos', 'file write failed',
                                                                    'No space left', 'File too large'))


@contextlib.contextmanager
def full_disk_is_user_error(path, outcome):
    """A write in the block that fails for a full disk or a file-size limit (write_failed) ends as one line,
    "no space left / file too large while writing {path}: {outcome}" (outcome: what is left as it was)."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        if not write_failed(e):
            raise
        raise UserError(f"no space left / file too large while writing {path}: {outcome}") from None


def set_aside(directory, names):
    """Each of names in directory becomes its *.previous.* file (best.pt -> best.previous.pt, last.dcp ->
    last.previous.dcp, metrics.jsonl -> metrics.previous.jsonl), an atomic rename over an older one: called before a
    new run in directory writes anything, so that the old run is kept and no script reads its files as the new run's."""
    for name in names:
        path = os.path.join(directory, name)
        if os.path.exists(path):
            stem, ext = os.path.splitext(name)
            aside = os.path.join(directory, f'{stem}.previous{ext}')
            if os.path.isdir(aside):  # a directory cannot be renamed over a full one: clear the older one first
                shutil.rmtree(aside)
            os.replace(path, aside)


@contextlib.contextmanager
def run_lock(out_dir):
    """Hold out_dir/.lock (the owner's pid, under an flock) while a run writes there: a second run into the same
    out_dir fails at start with one line. The kernel drops the flock of a process that dies however it dies
    (SIGKILL too), so a stale lock is simply taken; two runs starting at once cannot both take it, as the lock is
    the flock itself, not a test of the file's pid followed by a removal. An out_dir made here and still empty at
    the end (the run stopped on bad input) is removed again."""
    created = not os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, '.lock')
    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors='replace').strip() or '?'
            os.close(fd)
            raise UserError(f"{out_dir} is in use by another run (pid {owner}, see {path}): wait for it to end "
                            f"or choose another --out_dir") from None
        # the file we locked is still the lock: not one its owner removed while we opened it
        with contextlib.suppress(FileNotFoundError):
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    remove_stale_temps(out_dir)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)  # while holding the flock: a run that opened the old file sees it is gone and retries
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(out_dir)  # only if empty
