"""
Config overrides for the flat scripts: Python config files, then --key=value.

    python train.py config/pretrain_small.py --batch_size=32 --learning_rate=3e-4

A script keeps its defaults as plain globals and calls
    globals().update(configure(config_defaults(globals()), sys.argv[1:]))
Config files are Python: plain assignments to keys the script already has. An unknown key is an
error that names the closest known key; an int given for a float is fine; every override is printed once.
The range of every numeric key and the choices of every named option are checked here, once, for every
script that has the key (RULES, CHOICES): a bad value is a one-line ConfigError before anything runs.
"""

import ast
import difflib
import os


class ConfigError(ValueError):
    """A bad config file or override; scripts print its one-line message and exit."""


# key -> (lowest, highest, whether the lowest is allowed), for whichever script has the key; None values mean
# "the default" and are not checked. The scripts read these keys with these meanings everywhere.
AT_LEAST_1 = (1, None, True)
AT_LEAST_0 = (0, None, True)
ABOVE_0 = (0, None, False)
FRACTION = (0, 1, True)  # 0 <= x < 1
RULES = {
    **dict.fromkeys(('batch_size', 'block_size', 'n_layer', 'n_head', 'n_embd', 'max_iters', 'eval_iters',
                     'eval_interval', 'log_interval', 'gradient_accumulation_steps', 'epochs', 'num_samples',
                     'max_new_tokens', 'max_windows', 'fill_mask_top_k', 'top_k', 'steps', 'repeats',
                     'prompt_tokens', 'new_tokens', 'generate_batch', 'memory_steps', 'lora_alpha', 'n_words',
                     'finetune_block_size', 'finetune_batch_size', 'finetune_examples', 'finetune_repeats',
                     'ig_steps', 'train_examples'),
                    AT_LEAST_1),
    **dict.fromkeys(('warmup_iters', 'weight_decay', 'grad_clip', 'temperature', 'min_lr', 'lora_rank', 'patience',
                     'seed', 'split_seed', 'eval_generate', 'muon_momentum'), AT_LEAST_0),
    **dict.fromkeys(('learning_rate', 'muon_lr', 'rope_theta'), ABOVE_0),
    **dict.fromkeys(('dropout', 'lora_dropout', 'warmup', 'augment', 'test_fraction'), FRACTION),
    'val_fraction': (0, 1, False),
    'mlm_probability': (0, 1, False),
    'top_p': (0, 1, False),  # 0 < top_p <= 1: the upper end is allowed, see check_value
    'freeze_layers': (-1, None, True),  # -1: the whole trunk
}
INCLUSIVE_TOP = {'top_p'}
DTYPES = ('auto', 'float32', 'bfloat16', 'float16')
CHOICES = {
    'dtype': DTYPES,
    'lr_schedule': ('cosine', 'linear', 'constant', 'exponential'),
    'objective': ('clm', 'mlm'),
    'optimizer': ('adamw', 'muon'),
    'pos_embedding': ('learned', 'rope'),
    'norm': ('layer', 'rms'),
    'mlp': ('gelu', 'swiglu', 'relu2'),
    'explain_method': ('occlusion', 'integrated_gradients', 'both'),
    'projection': ('pca', 'tsne', 'umap'),
}


def check_value(key, value, where):
    """One-line ConfigError when value is outside the range RULES gives key, or not one of CHOICES[key]."""
    if value is None or isinstance(value, bool):
        return
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"{key}={value!r} ({where}) unknown: use one of {', '.join(map(str, CHOICES[key]))}")
    if key == 'device' and not (value in ('auto', 'cpu', 'mps', 'cuda') or
                                (value.startswith('cuda:') and value[5:].isdigit())):
        raise ConfigError(f"device={value!r} ({where}) unknown: use auto, cpu, cuda, cuda:N or mps")
    if key not in RULES or not isinstance(value, (int, float)):
        return
    low, high, low_allowed = RULES[key]
    too_low = value < low or (value == low and not low_allowed)
    too_high = high is not None and (value > high or (value == high and key not in INCLUSIVE_TOP))
    if too_low or too_high or value != value:  # value != value: NaN
        bounds = {AT_LEAST_1: 'at least 1', AT_LEAST_0: '0 or more', ABOVE_0: 'above 0',
                  FRACTION: 'in [0, 1)'}.get(RULES[key]) or (
            f"in {'[' if low_allowed else '('}{low}, {high}{']' if key in INCLUSIVE_TOP else ')'}" if high is not None
            else f"at least {low}")
        raise ConfigError(f"{key}={value!r} ({where}) is out of range: it must be {bounds}")


def check_config(config):
    """The rules that tie two keys together, after every override is in."""
    if isinstance(config.get('n_embd'), int) and isinstance(config.get('n_head'), int) and config['n_embd'] % config['n_head']:
        raise ConfigError(f"n_embd={config['n_embd']} is not divisible by n_head={config['n_head']}: "
                          f"pick sizes where n_embd / n_head is a whole head size (e.g. 256 / 4)")


def config_defaults(namespace):
    """The overridable globals of a script: public names bound to simple values."""
    return {k: v for k, v in namespace.items()
            if not k.startswith('_') and isinstance(v, (int, float, bool, str, type(None)))}


def configure(defaults, argv, quiet=False, explicit=None):
    """Apply config files and --key=value overrides (in order) to a copy of defaults; return the copy.
    The keys they set are added to the set `explicit` when one is given."""
    config = dict(defaults)
    for arg in argv:
        if not arg.startswith('--'):
            for key, value in read_config_file(arg).items():
                set_value(config, defaults, key, value, f"config file {arg}", quiet)
                if explicit is not None:
                    explicit.add(key)
            continue
        if '=' not in arg:
            if arg[2:] in defaults and isinstance(defaults[arg[2:]], bool):
                arg += '=True'  # --compile is --compile=True
            else:
                raise ConfigError(f"override {arg!r} has no value: write --key=value")
        key, raw = arg[2:].split('=', 1)
        set_value(config, defaults, key, parse_value(key, raw, defaults.get(key)), 'command line', quiet)
        if explicit is not None:
            explicit.add(key)
    for key, value in defaults.items():  # the defaults too: a script's own defaults obey the same rules
        if config[key] is value:
            check_value(key, value, 'default')
    check_config(config)
    return config


def read_config_file(path):
    if not os.path.exists(path):
        raise ConfigError(f"config file {path} not found (arguments are config files or --key=value overrides)")
    with open(path) as f:
        source = f.read()
    namespace = {}
    try:
        exec(compile(source, path, 'exec'), namespace)
    except Exception as e:
        raise ConfigError(f"config file {path} failed: {type(e).__name__}: {e}") from None
    return {k: v for k, v in namespace.items()
            if not k.startswith('_') and isinstance(v, (int, float, bool, str, type(None)))}


def parse_value(key, raw, default):
    """Python literal when it parses (3e-4, True, None, 'x'), the raw text for string keys otherwise."""
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        if isinstance(default, bool) and raw.lower() in ('true', 'false'):
            return raw.lower() == 'true'
        return raw
    if isinstance(default, str) and not isinstance(value, str):
        return raw  # --dataset=2024, --start=42: text for a string key, not a type error
    return value


def set_value(config, defaults, key, value, where, quiet):
    if key not in defaults:
        close = difflib.get_close_matches(key, list(defaults), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ''
        raise ConfigError(f"unknown config key {key!r} in {where}{hint}")
    default = defaults[key]
    if default is not None and value is not None:
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{key} expects True or False, got {value!r} ({where})")
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif type(value) is not type(default):
            raise ConfigError(f"{key} expects {type(default).__name__}, got {value!r} ({where})")
    check_value(key, value, where)
    if not quiet:
        print(f"config: {key} = {value!r}  ({where})")
    config[key] = value
