"""The TOML writer of training configurations: what it writes, tomllib reads back exactly."""

import math
import random
import tomllib

import pytest

from itkdeepreg.train.config import to_toml

SURROGATES = range(0xD800, 0xE000)  # not characters: UTF-8 (and so TOML) cannot hold them


def random_character(rng):
    kind = rng.randrange(6)
    if kind == 0:
        return chr(rng.choice([*range(0x20), 0x7F]))  # every control character
    if kind == 1:
        return rng.choice(['"', "\\", "'", "\t", "\n", "\r", "#", "=", "[", "]", "{", "}", ","])
    if kind == 2:
        return chr(rng.randrange(0x20, 0x7F))
    code = rng.randrange(0x80, 0x110000 if kind == 3 else 0x10000)
    return chr(code) if code not in SURROGATES else "\ufffd"


def random_string(rng):
    return "".join(random_character(rng) for _ in range(rng.randrange(12)))


def random_key(rng):
    return rng.choice([random_string(rng), "steps", "a-b_1", "1", "", "a.b", "a b"])


def random_float(rng):
    return rng.choice(
        [
            math.inf,
            -math.inf,
            math.nan,
            -0.0,
            0.0,
            5e-324,
            1.7976931348623157e308,
            rng.uniform(-1, 1),
            rng.uniform(-1, 1) * 10.0 ** rng.randrange(-300, 300),
            float(rng.randrange(-(2**60), 2**60)),
        ]
    )


def random_value(rng, depth=0):
    kinds = ["str", "int", "float", "bool"] + (["list", "table"] if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "str":
        return random_string(rng)
    if kind == "int":
        return rng.choice([0, -1, 2**63 - 1, -(2**63), rng.randrange(-(2**63), 2**63)])
    if kind == "float":
        return random_float(rng)
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {random_key(rng): random_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def same(a, b) -> bool:
    """Equal, with the same types (an int is not a float), nan equal to nan, -0.0 not 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


@pytest.mark.parametrize("seed", range(20))
def test_random_configurations_read_back_exactly(seed):
    rng = random.Random(seed)
    for _ in range(25):
        config = {
            random_key(rng): {random_key(rng): random_value(rng) for _ in range(rng.randrange(6))}
            for _ in range(rng.randrange(1, 5))
        }
        text = to_toml(config)
        back = tomllib.loads(text.encode("utf-8").decode("utf-8"))  # a file holds UTF-8
        assert same(back, config), (config, text)


def test_what_the_probe_found():
    """A newline or a control character in a string made a file that tomllib rejects."""
    config = {"data": {"source": "a\nb", "tab": "\t", "nul": "\x00", "del": "\x7f", "bell": "\a"}}
    assert tomllib.loads(to_toml(config)) == config


def test_a_value_toml_cannot_hold_is_refused():
    with pytest.raises(TypeError, match="TOML has no NoneType"):
        to_toml({"model": {"weights": None}})
