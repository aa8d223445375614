"""
Config overrides for the flat scripts: Python config files, then --key=value.

    python train.py config/pretrain_small.py --batch_size=32 --learning_rate=3e-4

A script keeps its defaults as plain globals and calls
    globals().update(configure(config_defaults(globals()), sys.argv[1:]))
Config files are Python: plain assignments to keys the script already has. An unknown key is an
error that names the closest known key; an int given for a float is fine; every override is printed once.
"""

import ast
import difflib
import os


class ConfigError(ValueError):
    """A bad config file or override; scripts print its one-line message and exit."""


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
    if not quiet:
        print(f"config: {key} = {value!r}  ({where})")
    config[key] = value
