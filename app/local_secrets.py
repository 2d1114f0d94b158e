"""Secrets a single-machine install keeps in data_dir, readable by its owner only: the key pepper
and the first API key (never printed into logs that others read)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pydantic import SecretStr

from app.settings import DEV_KEY_PEPPER, Settings

PEPPER_FILE = "key-pepper"
FIRST_KEY_FILE = "first-api-key.txt"


def with_key_pepper(settings: Settings) -> Settings:
    """``settings`` with a private pepper when none was configured.

    A set SYNTHAUG_KEY_PEPPER wins; an explicit SYNTHAUG_ENV=dev keeps the public dev pepper (the
    demo, throwaway runs). Otherwise the pepper is drawn once and kept in data_dir, so keys survive
    restarts and nobody can forge them from the published dev value. The dev value given as the
    pepper without SYNTHAUG_ENV=dev is refused (ValueError)."""
    if "env" in settings.model_fields_set:
        return settings  # dev chosen explicitly; test and prod already required a pepper
    if "key_pepper" in settings.model_fields_set:
        if settings.key_pepper.get_secret_value() == DEV_KEY_PEPPER:
            raise ValueError("SYNTHAUG_KEY_PEPPER is the published development value: set a secret one, "
                             "or SYNTHAUG_ENV=dev for a throwaway install")
        return settings
    path = settings.data_dir / PEPPER_FILE
    if not path.is_file():
        try:
            write_private(path, secrets.token_urlsafe(32), exclusive=True)
        except FileExistsError:
            pass  # another process drew it first: use theirs
    return settings.model_copy(update={"key_pepper": SecretStr(path.read_text().strip())})


def write_first_key(settings: Settings, raw_key: str) -> Path:
    """Store the first API key where only this user can read it; the file's path."""
    path = (settings.data_dir / FIRST_KEY_FILE).resolve()
    write_private(path, raw_key + "\n")
    return path


def write_private(path: Path, text: str, *, exclusive: bool = False) -> None:
    """Write ``text`` to a file of mode 0600 (created so, never readable by others in between)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise
        os.write(fd, text.encode())
    finally:
        os.close(fd)
