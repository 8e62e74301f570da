from longrecipe.config import CONF_DIR
from longrecipe.utils.seeding import sample_rng


def test_conf_dir_is_found():
    assert CONF_DIR.is_dir()


def test_sample_rng_is_deterministic_and_distinct():
    a = sample_rng(1, 0, 5).integers(0, 1 << 30, size=4)
    b = sample_rng(1, 0, 5).integers(0, 1 << 30, size=4)
    c = sample_rng(1, 1, 5).integers(0, 1 << 30, size=4)
    assert (a == b).all() and not (a == c).all()
