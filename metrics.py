"""
What a run reports: out_dir/metrics.jsonl (one JSON record a line, never a torn one), the console line of every
logged step, and the progress of long phases. No torch at import (plot.py draws the log: curves.png).

    log = MetricsLog(out_dir, config)                # tensorboard=True / wandb_project mirror it
    log_step(log, {'iter': 10, 'train_loss': 4.1, 'grad_norm': 0.5, 'lr': 1e-3, ...})  # printed and logged
    update = progress(total_bytes, 'tokenizing'); update(n); update(None)
    bits_per_byte(val_loss, meta)                    # nats per token -> bits per UTF-8 byte of the val text
"""

import errno
import json
import math
import os
import sys
import time

from configurator import UserError, require
from files import read_records, write_jsonl


class MetricsLog:
    """Appends one JSON object a line to out_dir/metrics.jsonl, each record in a single write: a line is complete
    or absent. resume_iter: the iteration of the checkpoint a run resumes from; records after it (and a torn last
    line) are dropped first, so that the log and the checkpoint agree. Mirrors scalars to tensorboard / wandb."""

    def __init__(self, out_dir, config, tensorboard=False, wandb_project=None, run_name=None, resume_iter=None):
        os.makedirs(out_dir, exist_ok=True)
        self.path = os.path.join(out_dir, 'metrics.jsonl')
        if resume_iter is not None and os.path.exists(self.path):  # rewritten atomically: complete records up to it
            records = read_records(self.path, complete=True)[0]
            write_jsonl(self.path, [r for r in records if r.get('iter', 0) <= resume_iter])
        self.tb = self.wandb = None
        if tensorboard:
            self.tb = require('torch.utils.tensorboard', "tensorboard=True needs the tensorboard package: "
                              "pip install tensorboard").SummaryWriter(os.path.join(out_dir, 'tensorboard'))
        if wandb_project:
            self.wandb = require('wandb', "wandb_project is set but wandb is not installed: pip install wandb")
            self.wandb.init(project=wandb_project, name=run_name, config=config)

    def log(self, record):
        record = {'time': round(time.time(), 3), **record}
        line = (json.dumps(record) + '\n').encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, line)  # one write with O_APPEND: never interleaved, never half a record
            if written != len(line):  # short write (disk full): cut the torn piece off again
                os.ftruncate(fd, os.lseek(fd, 0, os.SEEK_END) - written)
                raise OSError(errno.ENOSPC, 'No space left on device')
        except OSError as e:
            raise UserError(f"cannot append to {self.path} ({e.strerror}): free some space and resume with "
                            f"--init_from=resume") from None
        finally:
            os.close(fd)
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k not in ('iter', 'time')}
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, record.get('iter', 0))
        if self.wandb is not None:
            self.wandb.log(scalars, step=record.get('iter'))


# what log_step prints of a record, in this order: key -> format (the rest goes to the log only)
STEP_FORMATS = {'train_loss': 'loss {:.4f}', 'grad_norm': 'grad norm {:.3f}', 'lr': 'lr {:.2e}',
                'ms_per_iter': '{:.0f} ms/iter', 'tokens_per_s': '{:,.0f} tok/s', 'mfu': 'mfu {:.1%}',
                'elapsed_s': '{:.1f} min'}


def log_step(log, record, heading):
    """The one place a training step's record (train.py's and finetune.py's: loss, grad_norm, lr, tokens, ...)
    is printed, as `heading: loss 4.1234, grad norm 0.512, lr 1.00e-03, ...`, and appended to the metrics log."""
    shown = [fmt.format(record[k] / 60 if k == 'elapsed_s' else record[k]) for k, fmt in STEP_FORMATS.items()
             if record.get(k) is not None]
    print(f"{heading}: {', '.join(shown)}")
    log.log(record)


def bits_per_byte(loss, meta, split='val'):
    """Bits per UTF-8 byte of a split's text from a loss in nats per token (the mean over that split's .bin,
    eot included): loss / ln 2 / bytes_per_token, comparable across tokenizers. None for a dataset prepared before
    meta.json recorded bytes."""
    stats = meta.get('splits', {}).get(split, {})
    if not stats.get('bytes') or not stats.get('tokens'):
        return None
    return loss * stats['tokens'] / stats['bytes'] / math.log(2)


def progress(total, desc, unit='B'):
    """Progress on stderr: update(n) after n more units, update(None) at the end. unit 'B' counts bytes (shown in
    MB); any other unit ('texts', 'examples', 'batches') counts items. total may be None (unknown). A tqdm bar with
    rate and ETA on a terminal; otherwise a plain line at most every ~5 s, and a last one."""
    if sys.stderr.isatty():
        from tqdm import tqdm
        bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == 'B', leave=False)
        return lambda n: bar.close() if n is None else bar.update(n)
    scale, shown = (1e6, 'MB') if unit == 'B' else (1, unit)
    start = last = time.time()
    done = 0

    def update(n):
        nonlocal done, last
        done += n or 0
        now = time.time()
        if n is not None and now - last < 5:
            return
        last = now
        rate = done / max(now - start, 1e-6)
        amount = (f'{done / scale:.1f}' + (f'/{total / scale:.1f}' if total else '')) if unit == 'B' else (
            f'{done:,}' + (f'/{total:,}' if total else ''))
        line = f'{desc}: {amount} {shown}, {rate / scale:.1f} {shown}/s'
        if total and n is not None:
            line += f', ETA {(total - done) / max(rate, 1e-9):.0f} s'
        print(line, file=sys.stderr, flush=True)
    return update
