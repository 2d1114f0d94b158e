"""Tenant ids and an adapter on disk, for tests that write rows directly."""

from __future__ import annotations

import pytest

from tests.api.factories import insert_adapter, tenant_id_of, write_adapter_files


@pytest.fixture
def tenant_id(db, auth) -> str:
    return tenant_id_of(db, "tenant-a")


@pytest.fixture
def other_tenant_id(db, other_auth) -> str:
    return tenant_id_of(db, "tenant-b")


@pytest.fixture
def adapter_id(db, tenant_id, tmp_path) -> str:
    """An adapter of tenant-a whose files exist."""
    return insert_adapter(db, tenant_id, write_adapter_files(tmp_path / "adapter"))
