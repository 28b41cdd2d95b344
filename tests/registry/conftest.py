from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> Iterator[None]:
    """OpenMP/BLAS/torch pools of one thread: on a shared 2-CPU runner more only contend."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def signed_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Adult example on the sklearn flavor, trained once with registry.sign on; its key pair
    in keys/ (the public key trusted), KEEL_SIGNING_KEY set only while it trains. Tests that
    change it work on a copy."""
    from keel.registry.signing import generate_keys
    from tests.registry.packages import make_project, restore_env, with_signing_key

    base = tmp_path_factory.mktemp("signed")
    keys = generate_keys(base / "keys")
    old = with_signing_key(keys.private_key)
    try:
        return make_project(
            base / "adult",
            registry=f"  sign: true\n  trusted_keys: [{keys.public_key}]\n",
        )
    finally:
        restore_env(old)
