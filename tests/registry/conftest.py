from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from keel.registry.registry import Registry
from keel.store import MetadataStore


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


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MetadataStore]:
    """A metadata store with churn versions 1-3 registered by alice, v1 at production (the
    deployment tests'; a module with its own ``store`` fixture uses that instead)."""
    with MetadataStore(f"sqlite:///{tmp_path}/keel.db") as opened:
        reg = Registry(opened.database, actor="alice")
        for i in range(3):
            reg.register("churn", package_sha256=f"{i + 1:x}" * 64, run_id=None, metrics={})
        reg.promote("churn", 1, alias="production")
        yield opened


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
