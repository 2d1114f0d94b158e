"""The one way this service builds an OpenAI client: key, base URL, retries and timeout from settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.errors import InvalidInput
from app.settings import Settings

if TYPE_CHECKING:
    from openai import OpenAI

OPENAI_API_URL = "https://api.openai.com/v1"


def openai_client(settings: Settings) -> "OpenAI":
    """An SDK client; the SDK retries 408/409/429/5xx honouring Retry-After. The key is never logged."""
    from openai import OpenAI

    if settings.openai_api_key is None or not settings.openai_api_key.get_secret_value():
        raise InvalidInput("no OpenAI API key is configured: set SYNTHAUG_OPENAI_API_KEY on the workers")
    # The base URL is always given, so only settings choose it (the SDK would read OPENAI_BASE_URL).
    return OpenAI(api_key=settings.openai_api_key.get_secret_value(),
                  base_url=settings.openai_base_url or OPENAI_API_URL,
                  max_retries=settings.openai_max_retries, timeout=settings.openai_timeout_s)
