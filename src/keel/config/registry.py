"""The ``registry:`` section: the alias a passing version takes, approvals, and webhooks."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from keel.config.base import Frozen

__all__ = ["REGISTRY_EVENTS", "RegistryConfig", "WebhookConfig"]

REGISTRY_EVENTS: tuple[str, ...] = (
    "model_registered",
    "alias_moved",
    "alias_removed",
    "promotion_requested",
    "promotion_approved",
    "promotion_rejected",
    "version_archived",
    "version_restored",
    "version_deleted",
)
"""The kinds of event the registry writes to the ``events`` table (and webhooks receive)."""

_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,99}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class WebhookConfig(Frozen):
    """One webhook: an HTTP(S) URL that receives registry events as signed JSON POSTs."""

    url: str = Field(
        description="Where events are POSTed (http:// or https://), with the headers "
        "Keel-Event-Id and Keel-Signature: sha256=<HMAC-SHA256 of the body>.",
    )
    events: list[str] = Field(
        default_factory=list,
        description="The event kinds to send (e.g. [alias_moved, model_registered]); empty: "
        "every registry event. Kinds: " + ", ".join(REGISTRY_EVENTS) + ".",
    )
    secret_env: str | None = Field(
        default=None,
        description="The environment variable holding the HMAC secret (never the secret "
        "itself); unset: deliveries carry no signature.",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"webhook url {value!r} must start with http:// or https://")
        return value

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: list[str]) -> list[str]:
        unknown = [kind for kind in value if kind not in REGISTRY_EVENTS]
        if unknown:
            raise ValueError(
                f"unknown webhook event kind(s) {unknown}; use any of {list(REGISTRY_EVENTS)}"
            )
        return value

    @field_validator("secret_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(
                f"secret_env {value!r} is not an environment variable name (e.g. "
                "HOOK_SECRET); put the secret in that variable, not in keel.yaml"
            )
        return value


class RegistryConfig(Frozen):
    """The alias a passing version takes, the approvals an alias needs, and webhooks."""

    alias: str = Field(
        default="production",
        description="The alias a version that passes the gates takes (NAME@ALIAS), and the "
        "primary that keel deploy's canary, shadow and A/B deployments start from and promote. "
        "A bare NAME (keel serve NAME, keel predict NAME, keel.load_model('NAME')) means "
        "NAME@ALIAS in this project, else the newest version while the alias is unset.",
    )
    approvals: dict[str, int] = Field(
        default_factory=dict,
        description="Alias -> how many people other than the requester must approve a "
        "promotion to it (e.g. {production: 1}); such a promotion waits as a pending request "
        "(keel models requests, keel models approve ID). Aliases not named need none.",
    )
    webhooks: list[WebhookConfig] = Field(
        default_factory=list,
        description="HTTP endpoints notified of registry events (retried with exponential "
        "backoff; keel scheduler and keel webhooks deliver send them).",
    )
    sign: bool = Field(
        default=False,
        description="Sign each registered (or imported) package's manifest with the Ed25519 "
        "key in KEEL_SIGNING_KEY (PEM or a path; keel keys generate); keel-model.sig holds "
        "the key id and signature. The key never goes into keel.yaml or the metadata store.",
    )
    require_signature: bool = Field(
        default=False,
        description="Refuse to load, serve or import a package without a valid signature by "
        "one of trusted_keys (unsigned, unknown key and bad signature are each named).",
    )
    trusted_keys: list[str] = Field(
        default_factory=list,
        description="Public key files (PEM, relative to the project) whose signatures are "
        "trusted when require_signature is on or a package is verified.",
    )

    @field_validator("approvals")
    @classmethod
    def _approvals(cls, value: dict[str, int]) -> dict[str, int]:
        for alias, count in value.items():
            if not _ALIAS.match(alias) or alias == "latest":
                raise ValueError(
                    f"approvals key {alias!r} is not an alias (letters, digits, '_', '.', '-', "
                    "starting with a letter; not 'latest')"
                )
            if count < 0:
                raise ValueError(f"approvals.{alias} is {count}; use 0 or more approvers")
        return value

    def approvals_for(self, alias: str) -> int:
        """How many approvals a promotion to ``alias`` needs (0: it applies at once)."""
        return self.approvals.get(alias, 0)
