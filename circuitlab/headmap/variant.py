"""HeadMap's two variants as objects that carry what differs between them, so the rest of circuitlab asks a variant
what it does (can it merge? where does its output go?) instead of comparing its name.

A `str` enum: a member is the string it stands for ("mha", "hs"), so it equals, hashes, formats and JSON-encodes as
that string, and adapter_config.json reads and writes exactly as before (PEFT's `to_dict()` keeps the member,
`json.dumps` writes its value, `from_pretrained` gives the string back to `HeadMapConfig`, which makes it a member
again). This module imports neither torch nor PEFT: the light half (method tables, adapter directories) reads it.
"""

from __future__ import annotations

from enum import Enum

from circuitlab.core.errors import CircuitlabError


class Variant(str, Enum):
    MHA = "mha"  # paper Eq. 8: added to the attention block's output, before the MLP
    HS = "hs"  # paper Eq. 7: added to the decoder layer's output hidden state, after the MLP

    # As `enum.StrEnum` (Python 3.11+; circuitlab supports 3.10): str() and f-strings give the value, not the name.
    __str__ = str.__str__
    __format__ = str.__format__

    @classmethod
    def of(cls, value) -> Variant:
        """The variant named `value` (a member or its string), or one line naming the choices."""
        try:
            return cls(value)
        except ValueError:
            raise CircuitlabError(f"unknown HeadMap variant {value!r}; choose one of "
                                  f"{', '.join(v.value for v in cls)}") from None

    @property
    def after_mlp(self) -> bool:
        """Whether the map's output joins the residual stream after the MLP (at mlp.down_proj's output, where a
        `HeadMapSink` adds it) rather than at o_proj's output, where the MLP reads it."""
        return self is Variant.HS

    @property
    def mergeable(self) -> bool:
        """Whether the map folds into the model's weights: at o_proj's output it is linear in o_proj's input, so it
        folds into W_O (and can be written as a LoRA on o_proj); after the MLP no weight of the model sees it."""
        return not self.after_mlp

    @property
    def equation(self) -> str:
        """The paper's equation for it."""
        return "Eq. 7" if self.after_mlp else "Eq. 8"

    @property
    def method(self) -> str:
        """Its fine-tuning method's name, also an adapter's kind in a result (`headmap-mha`, `headmap-hs`)."""
        return f"headmap-{self.value}"

    @property
    def label(self) -> str:
        """Its name in tables and adapter cards (`HeadMap-MHA`, `HeadMap-HS`)."""
        return f"HeadMap-{self.value.upper()}"


VARIANTS = tuple(v.value for v in Variant)
