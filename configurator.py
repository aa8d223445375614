"""
The command line of every script: Python config files, then --key=value overrides, and bad input as one line.

    python train.py config/pretrain_small.py --batch_size=32 --learning_rate=3e-4

A script keeps its defaults as plain globals and calls
    globals().update(configure(config_defaults(globals()), sys.argv[1:], fields_of=ModelConfig))
Config files are Python: plain assignments to keys the script already has. An unknown key is an
error that names the closest known key; an int given for a float is fine; every override is printed once.
The range of every numeric key and the choices of every named option are checked here, once, for every
script that has the key: RULES and CHOICES for the scripts' own keys, the field metadata of ModelConfig
(model.option) for the model's. A bad value is a one-line ConfigError before anything runs.
UserError (ConfigError, tokenizer.DataError, ...) is what run_main turns into that line and exit status 2.
Imports the standard library only.
"""

import ast
import dataclasses
import difflib
import importlib
import os
import runpy
import sys


class UserError(ValueError):
    """Bad input from the user: scripts print the one-line message and exit with status 2 (run_main)."""


class ConfigError(UserError):
    """A bad config file or override."""


def run_main(main):
    """Call main(); bad input (a UserError: config, data, checkpoint) becomes one line on stderr and exit status 2."""
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def require(module, message):
    """The optional module, imported, or a one-line UserError with message (what needs it, how to install it)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(message) from None


def read_text_arg(value, key):
    """The text of a --key=text or --key=FILE:path option (sample.py's --start, finetune.py's --predict); a missing,
    empty or non-UTF-8 file is a one-line UserError."""
    if not value.startswith('FILE:'):
        return value
    path = value[5:]
    try:
        with open(path, encoding='utf-8') as f:
            text = f.read()
    except FileNotFoundError:
        raise UserError(f"--{key}=FILE:{path}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"--{key}=FILE:{path} is a directory: name a text file") from None
    except UnicodeDecodeError as e:
        raise UserError(f"--{key}=FILE:{path} is not UTF-8 ({e.reason} at byte {e.start}): convert it first, "
                        f"e.g. iconv -f latin1 -t utf-8") from None
    if not text.strip():
        raise UserError(f"--{key}=FILE:{path} is empty: put the text in it")
    return text


# key -> (lowest, highest, whether the lowest is allowed), for whichever script has the key; None values mean
# "the default" and are not checked. The scripts read these keys with these meanings everywhere. The model's keys
# are not here: each ModelConfig field declares its own range and choices (model.option), read by configure.
AT_LEAST_1 = (1, None, True)
AT_LEAST_0 = (0, None, True)
ABOVE_0 = (0, None, False)
FRACTION = (0, 1, True)  # 0 <= x < 1
RULES = {
    **dict.fromkeys(('batch_size', 'max_iters', 'eval_iters', 'eval_interval', 'log_interval',
                     'gradient_accumulation_steps', 'epochs', 'num_samples', 'max_new_tokens', 'max_windows',
                     'fill_mask_top_k', 'top_k', 'steps', 'repeats', 'prompt_tokens', 'new_tokens', 'generate_batch',
                     'memory_steps', 'lora_alpha', 'n_words', 'finetune_block_size', 'finetune_batch_size',
                     'finetune_examples', 'finetune_repeats', 'ig_steps', 'train_examples', 'lr_decay_iters'), AT_LEAST_1),
    **dict.fromkeys(('warmup_iters', 'weight_decay', 'grad_clip', 'temperature', 'min_lr', 'lora_rank', 'patience',
                     'seed', 'split_seed', 'eval_generate'), AT_LEAST_0),
    **dict.fromkeys(('learning_rate', 'muon_lr'), ABOVE_0),
    **dict.fromkeys(('lora_dropout', 'warmup', 'augment', 'test_fraction', 'muon_momentum', 'beta1', 'beta2'),
                    FRACTION),
    # 0 < x < 1, and 0 < top_p <= 1: the upper end is allowed (INCLUSIVE_TOP, see check_value)
    **dict.fromkeys(('val_fraction', 'mlm_probability', 'top_p'), (0, 1, False)),
    'freeze_layers': (-1, None, True),  # -1: the whole trunk
}
INCLUSIVE_TOP = {'top_p'}
CHOICES = {
    'dtype': ('auto', 'float32', 'bfloat16', 'float16'),
    'objective': ('clm', 'mlm'),
    'explain_method': ('occlusion', 'integrated_gradients', 'both'),
    'projection': ('pca', 'tsne', 'umap'),
}


def field_rules(fields_of):
    """({key: range}, {key: choices}) of a config dataclass's fields, from their metadata (model.option)."""
    ranges, choices = {}, {}
    for f in dataclasses.fields(fields_of) if fields_of else ():
        low = f.metadata.get('low', f.metadata.get('above'))
        if low is not None or 'below' in f.metadata:
            ranges[f.name] = (low, f.metadata.get('below'), 'above' not in f.metadata)
        if 'choices' in f.metadata:
            choices[f.name] = f.metadata['choices']
    return ranges, choices


def check_value(key, value, where, ranges=RULES, choices=CHOICES):
    """One-line ConfigError when value is outside the range the rules give key, or not one of its choices."""
    if value is None or isinstance(value, bool):
        return
    if key in choices and value not in choices[key]:
        raise ConfigError(f"{key}={value!r} ({where}) unknown: use one of {', '.join(map(str, choices[key]))}")
    if key == 'device' and not (value in ('auto', 'cpu', 'mps', 'cuda') or
                                (value.startswith('cuda:') and value[5:].isdigit())):
        raise ConfigError(f"device={value!r} ({where}) unknown: use auto, cpu, cuda, cuda:N or mps")
    if key not in ranges:
        return
    if not isinstance(value, (int, float)):
        raise ConfigError(f"{key}={value!r} ({where}) is not a number")
    low, high, low_allowed = ranges[key]
    too_low = value < low or (value == low and not low_allowed)
    too_high = high is not None and (value > high or (value == high and key not in INCLUSIVE_TOP))
    if too_low or too_high or value != value:  # value != value: NaN
        bounds = (f"in {'[' if low_allowed else '('}{low}, {high}{']' if key in INCLUSIVE_TOP else ')'}" if high is not None
                  else f"{'at least' if low_allowed else 'above'} {low}")
        raise ConfigError(f"{key}={value!r} ({where}) is out of range: it must be {bounds}")


def config_defaults(namespace):
    """The overridable globals of a script: public names bound to simple values, constants aside (UPPER_CASE names
    of two or more characters, such as one imported from another module; baseline.py's `C` is a setting)."""
    return {k: v for k, v in namespace.items() if not k.startswith('_') and not (k.isupper() and len(k) > 1)
            and isinstance(v, (int, float, bool, str, type(None)))}


def configure(defaults, argv, quiet=False, explicit=None, fields_of=None, choices=None):
    """Apply config files and --key=value overrides (in order) to a copy of defaults; return the copy.
    The keys they set are added to the set `explicit` when one is given. fields_of: a config dataclass
    (model.ModelConfig) whose fields are settings too: those the script does not set itself are added with their
    defaults (all but the ones marked settable=False, which the script derives), each is checked against its
    field's range and choices, and the dataclass's own rules between fields (n_embd % n_head, ...) are applied to
    the result. choices: {key: allowed values} of the script's other keys (e.g. optim.CHOICES)."""
    defaults = {**{f.name: f.default for f in dataclasses.fields(fields_of) if f.metadata.get('settable', True)},
                **defaults} if fields_of else defaults
    field_ranges, field_choices = field_rules(fields_of)
    rules = {**RULES, **field_ranges}, {**CHOICES, **(choices or {}), **field_choices}
    config, explicit = dict(defaults), set() if explicit is None else explicit
    if '--help' in argv or '-h' in argv:  # how to run the script (its docstring), then every key and its default
        print((sys.modules['__main__'].__doc__ or '').strip(), '\nkeys (--key=value):')
        print('\n'.join(f"  --{key}={value!r}" for key, value in sorted(defaults.items())))
        raise SystemExit(0)
    for arg in argv:
        if arg.startswith('--'):
            if '=' not in arg:
                if not isinstance(defaults.get(arg[2:]), bool):
                    raise ConfigError(f"override {arg!r} has no value: write --key=value")
                arg += '=True'  # --compile is --compile=True
            key, raw = arg[2:].split('=', 1)
            settings, where = {key: parse_value(key, raw, defaults.get(key))}, 'command line'
        else:
            settings, where = read_config_file(arg), f"config file {arg}"
        for key, value in settings.items():
            set_value(config, defaults, key, value, where, quiet, rules)
            explicit.add(key)
    for key, value in defaults.items():  # the defaults too: a script's own defaults obey the same rules
        if config[key] is value:
            check_value(key, value, 'default', *rules)
    if isinstance(config.get('min_lr'), (int, float)) and isinstance(config.get('learning_rate'), (int, float)) \
            and config['min_lr'] > config['learning_rate']:
        raise ConfigError(f"min_lr={config['min_lr']} is above learning_rate={config['learning_rate']}: the schedule "
                          f"decays to min_lr, so give one at most learning_rate (None: a tenth of it)")
    if fields_of:
        try:
            fields_of(**settings_of(config, fields_of))
        except ValueError as e:
            raise ConfigError(str(e)) from None
    return config


def settings_of(config, fields_of):
    """The entries of config that are fields of the dataclass fields_of: what a script builds its ModelConfig from."""
    return {f.name: config[f.name] for f in dataclasses.fields(fields_of) if f.name in config}


def read_config_file(path):
    if not os.path.exists(path):
        raise ConfigError(f"config file {path} not found (arguments are config files or --key=value overrides)")
    try:
        return config_defaults(runpy.run_path(path))  # the settings among the file's globals after running it
    except Exception as e:
        raise ConfigError(f"config file {path} failed: {type(e).__name__}: {e}") from None


def parse_value(key, raw, default):
    """Python literal when it parses (3e-4, True, None, 'x'), the raw text for string keys otherwise."""
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        if isinstance(default, bool) and raw.lower() in ('true', 'false'):
            return raw.lower() == 'true'
        return raw
    # --dataset=2024, --start=42: text for a string key, not a type error
    return raw if isinstance(default, str) and not isinstance(value, str) else value


def set_value(config, defaults, key, value, where, quiet, rules=(RULES, CHOICES)):
    if key not in defaults:
        close = difflib.get_close_matches(key, list(defaults), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ''
        raise ConfigError(f"unknown config key {key!r} in {where}{hint}")
    default = defaults[key]
    if default is not None and value is not None:
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif type(value) is not type(default):  # bool's type too: 1 is not True
            expected = 'True or False' if isinstance(default, bool) else type(default).__name__
            raise ConfigError(f"{key} expects {expected}, got {value!r} ({where})")
    check_value(key, value, where, *rules)
    if not quiet:
        print(f"config: {key} = {value!r}  ({where})")
    config[key] = value
