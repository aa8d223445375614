"""
Tests for configurator.py (config files, then --key=value overrides):

    python -m pytest -q tests/test_configurator.py
"""
import subprocess
import sys
from pathlib import Path

import pytest

from configurator import ConfigError, config_defaults, configure, parse_value

DEFAULTS = dict(batch_size=16, learning_rate=1e-3, compile=False, out_dir='out', dataset='bbc_news',
                min_lr=None, dropout=0.0, max_iters=1000, init_from='scratch')


def write_config(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_config_defaults_picks_simple_public_globals():
    """Only public names bound to simple values are overridable; constants are not settings."""
    namespace = {'batch_size': 4, 'name': 'x', 'flag': True, 'nothing': None, '_private': 1,
                 'os': __import__('os'), 'fn': print, 'items': [1, 2], 'EOT': '<|endoftext|>', 'IG_ROUNDS': 4,
                 'C': None, 'C_grid': '1,3'}
    assert config_defaults(namespace) == {'batch_size': 4, 'name': 'x', 'flag': True, 'nothing': None, 'C': None,
                                          'C_grid': '1,3'}


def test_a_module_constant_is_not_a_setting():
    """bench's runner source, export's imported tokenizer pattern and features' integration constants are not
    overrides a user could set by mistake: --help does not list them and setting one is an unknown key."""
    import bench, export, features
    for module, key in ((bench, 'PEAK_RSS_RUNNER'), (export, 'GPT2_PAT_STR'), (features, 'IG_ROUNDS')):
        with pytest.raises(ConfigError, match='unknown'):
            configure(config_defaults(vars(module)), [f'--{key}=1'], quiet=True)


def test_files_and_overrides_apply_in_order(tmp_path, capsys):
    """Config files and overrides are applied left to right; the defaults dict is not modified; each is printed."""
    first = write_config(tmp_path, 'a.py', "batch_size = 32\nlearning_rate = 3e-4  # 32 * 4\nimport math\n_x = 1\n")
    second = write_config(tmp_path, 'b.py', "batch_size = 64\nout_dir = 'out/' + 'b'\n")
    explicit = set()
    config = configure(DEFAULTS, [first, '--batch_size=8', second, '--max_iters=5'], explicit=explicit)
    assert config['batch_size'] == 64 and config['learning_rate'] == 3e-4
    assert config['out_dir'] == 'out/b' and config['max_iters'] == 5
    assert config['compile'] is False and config['dataset'] == 'bbc_news'
    assert DEFAULTS['batch_size'] == 16  # a copy was changed
    assert explicit == {'batch_size', 'learning_rate', 'out_dir', 'max_iters'}
    out = capsys.readouterr().out
    assert "config: max_iters = 5  (command line)" in out and f"config: out_dir = 'out/b'  (config file {second})" in out
    assert configure(DEFAULTS, ['--batch_size=8', first], quiet=True)['batch_size'] == 32
    assert capsys.readouterr().out == ''


def test_int_for_float_and_none_defaults():
    """An int given for a float becomes a float; a key whose default is None takes any value."""
    config = configure(DEFAULTS, ['--learning_rate=1', '--dropout=0', '--min_lr=1e-5'], quiet=True)
    assert config['learning_rate'] == 1.0 and isinstance(config['learning_rate'], float)
    assert config['dropout'] == 0.0 and isinstance(config['dropout'], float)
    assert config['min_lr'] == 1e-5
    assert configure(DEFAULTS, ['--min_lr=None'], quiet=True)['min_lr'] is None


def test_bool_parsing():
    """--flag means True; True/False/true/false parse; anything else for a bool is an error."""
    assert configure(DEFAULTS, ['--compile'], quiet=True)['compile'] is True
    assert configure(DEFAULTS, ['--compile', '--compile=False'], quiet=True)['compile'] is False
    assert configure(DEFAULTS, ['--compile=true'], quiet=True)['compile'] is True
    assert configure(DEFAULTS, ['--compile=false'], quiet=True)['compile'] is False
    with pytest.raises(ConfigError, match='compile expects True or False'):
        configure(DEFAULTS, ['--compile=1'], quiet=True)
    with pytest.raises(ConfigError, match='has no value'):
        configure(DEFAULTS, ['--batch_size'], quiet=True)  # only bools may omit the value


def test_string_values():
    """String keys take the raw text, even when it would parse as a number or a name."""
    config = configure(DEFAULTS, ['--out_dir=out/run 1', '--dataset=2024', '--init_from=resume'], quiet=True)
    assert config['out_dir'] == 'out/run 1' and config['dataset'] == '2024' and config['init_from'] == 'resume'
    assert configure(DEFAULTS, ["--out_dir='quoted'"], quiet=True)['out_dir'] == 'quoted'
    assert parse_value('start', '42', '\n') == '42'
    assert parse_value('start', 'The government said', '\n') == 'The government said'


def test_unknown_key_names_closest(tmp_path):
    """A misspelt key is an error naming the closest known key, on the command line and in config files."""
    with pytest.raises(ConfigError, match=r"unknown config key 'batch_sise'.*did you mean 'batch_size'"):
        configure(DEFAULTS, ['--batch_sise=4'], quiet=True)
    path = write_config(tmp_path, 'c.py', 'learning_rat = 1e-3\n')
    with pytest.raises(ConfigError, match=r"'learning_rat' in config file .*did you mean 'learning_rate'"):
        configure(DEFAULTS, [path], quiet=True)
    with pytest.raises(ConfigError, match=r"unknown config key 'zzz'") as info:
        configure(DEFAULTS, ['--zzz=1'], quiet=True)
    assert 'did you mean' not in str(info.value)


@pytest.mark.parametrize('arg,key', [('--batch_size=abc', 'batch_size'), ('--learning_rate=x', 'learning_rate'),
                                     ('--batch_size=2.5', 'batch_size'), ('--batch_size=True', 'batch_size')])
def test_wrong_type_names_key(arg, key):
    """A value of the wrong type is an error that names the key and the value."""
    with pytest.raises(ConfigError, match=rf"^{key} expects") as info:
        configure(DEFAULTS, [arg], quiet=True)
    assert arg.split('=', 1)[1] in str(info.value) and '\n' not in str(info.value)


def test_bad_config_files(tmp_path):
    """A missing or broken config file is a ConfigError naming the file."""
    with pytest.raises(ConfigError, match='config file nope.py not found'):
        configure(DEFAULTS, ['nope.py'], quiet=True)
    broken = write_config(tmp_path, 'broken.py', 'batch_size = = 3\n')
    with pytest.raises(ConfigError, match='broken.py failed: SyntaxError'):
        configure(DEFAULTS, [broken], quiet=True)
    wrong_type = write_config(tmp_path, 'wrong.py', "batch_size = 'big'\n")
    with pytest.raises(ConfigError, match=r"batch_size expects int, got 'big' \(config file .*wrong.py\)"):
        configure(DEFAULTS, [wrong_type], quiet=True)


@pytest.mark.parametrize('name', ['pretrain_small', 'pretrain_small_gpt2', 'pretrain_gpt2', 'pretrain_bert_small',
                                  'pretrain_bert_small_bpe4k', 'finetune_bbc',
                                  'finetune_bbc_bert', 'finetune_ner', 'finetune_sft', 'finetune_gpt2_sentiment'])
def test_real_config_files_are_valid(name):
    """Each shipped config only sets keys its script (train.py, finetune.py: its globals and ModelConfig's fields)
    has, with the right types, and all of them take effect."""
    import importlib
    from conftest import REPO
    from configurator import read_config_file
    script = importlib.import_module(name.split('_')[0].replace('pretrain', 'train'))
    path = str(REPO / 'config' / f'{name}.py')
    config = configure(config_defaults(vars(script)), [path], quiet=True, fields_of=script.ModelConfig)
    assigned = read_config_file(path)
    assert assigned and all(config[k] == v for k, v in assigned.items())
    assert config['out_dir'] == f'out/{name}'


@pytest.mark.parametrize('script', ['train.py', 'finetune.py', 'prepare.py', 'sample.py'])
def test_help_shows_how_to_run_and_every_key(script):
    out = subprocess.run([sys.executable, script, '--help'], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr
    assert 'python' in out.stdout.split('keys (--key=value):')[0]  # the docstring starts with how to run it
    assert '  --out_dir=' in out.stdout or '  --dedup_threshold=' in out.stdout
