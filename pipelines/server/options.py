"""How `rag serve` listens and how much it takes on (the RagConfig says what it serves), and how
both travel to worker processes."""

from __future__ import annotations

import json
import os

from pydantic import BaseModel, Field

from pipelines.config import RagConfig
from pipelines.server.security import (DEFAULT_HOST, DEFAULT_NETWORK_GENERATIONS, DEFAULT_PORT, MAX_BODY_BYTES,
                                       MAX_CHATS_PER_CLIENT, MAX_REQUESTS_PER_CLIENT, MAX_UPLOAD_BYTES,
                                       read_server_key)


class ServeOptions(BaseModel):
    """The server's own settings. The key itself is never held here: only the name of the
    variable that holds it."""

    host: str = DEFAULT_HOST
    port: int = Field(DEFAULT_PORT, ge=0, le=65535)
    server_key_env: str | None = None
    keys_file: str | None = Field(None, description="--keys FILE: keys per client (hashes or variable names)")
    workers: int = Field(1, ge=1)
    max_concurrent_generations: int | None = Field(None, ge=1, description="network backends; "
                                                   f"default {DEFAULT_NETWORK_GENERATIONS}")
    cors_origins: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(MAX_BODY_BYTES, ge=1024)
    max_upload_bytes: int = Field(MAX_UPLOAD_BYTES, ge=1, description="per uploaded file (--max-upload-mb)")
    max_requests_per_client: int = Field(MAX_REQUESTS_PER_CLIENT, ge=1)
    max_chats_per_client: int = Field(MAX_CHATS_PER_CLIENT, ge=1)
    log_level: str = "info"
    watch: list[str] = Field(default_factory=list, description="folders the default collection follows")

    def server_key(self) -> str | None:
        return read_server_key(self.server_key_env)

    def key_grants(self) -> list:
        """The keys of `keys_file` ((digest, Grant), pipelines.server.keys); [] without one."""
        from pipelines.server.keys import load_keys

        return load_keys(self.keys_file) if self.keys_file else []

    def requires_key(self) -> bool:
        return bool(self.server_key_env or self.keys_file)


def environment_settings(config: RagConfig, options: ServeOptions) -> str:
    """Config and options as JSON for worker processes (`--workers N`): uvicorn starts each from
    an import string, so they travel in the environment. No secret is in them."""
    return json.dumps({"config": config.model_dump(mode="json"), "options": options.model_dump(mode="json")})


def settings_from_environment(variable: str) -> tuple[RagConfig, ServeOptions]:
    data = json.loads(os.environ[variable])
    return RagConfig(**data["config"]), ServeOptions(**data["options"])
