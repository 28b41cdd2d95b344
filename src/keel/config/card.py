"""keel.yaml's ``card:`` section: the words of a model card that the numbers cannot give
(intended use, what the model is not for, owners, caveats, references)."""

from __future__ import annotations

from pydantic import Field, field_validator

from keel.config.base import Frozen

__all__ = ["CardConfig"]


class CardConfig(Frozen):
    """What a registered version's model card says besides its numbers (keel models card)."""

    intended_use: str = Field(
        default="",
        description="What the model is for and who should use it, in a sentence or two.",
    )
    out_of_scope: str = Field(
        default="",
        description="Uses the model is not meant or validated for.",
    )
    owners: list[str] = Field(
        default_factory=list,
        description="Who answers for the model (names, teams or e-mail addresses).",
    )
    caveats: list[str] = Field(
        default_factory=list,
        description="Known limitations and risks, one per entry; shown with the card's "
        "automatic caveats (small slices, failed gates, undefined fairness rates).",
    )
    references: list[str] = Field(
        default_factory=list,
        description="Papers, datasets or documents the card points to (plain text or URLs, "
        "shown as text, never fetched).",
    )

    @field_validator("owners", "caveats", "references")
    @classmethod
    def _no_blank_entries(cls, values: list[str]) -> list[str]:
        if any(not v.strip() for v in values):
            raise ValueError("entries must be non-empty text")
        return values
