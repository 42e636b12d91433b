"""HeadMap's variants are objects (`circuitlab.headmap.variant.Variant`) that say what they do, and they are still
the strings "mha" and "hs" in every file: adapter_config.json written by PEFT, read back by plain PEFT."""

import json

import pytest
import torch
from peft import PeftConfig, PeftModel, get_peft_model

from circuitlab.core.errors import CircuitlabError
from circuitlab.finetune.config import METHODS
from circuitlab.headmap import HeadMapConfig, Variant, maps, register
from circuitlab.headmap.dirs import AdapterDir
from circuitlab.models import tiny_model
from tests.helpers import IDS, randomize

pytestmark = pytest.mark.usefixtures("one_thread")
register()


def test_each_variant_says_what_it_does():
    assert (Variant.MHA.mergeable, Variant.MHA.after_mlp, Variant.MHA.equation) == (True, False, "Eq. 8")
    assert (Variant.HS.mergeable, Variant.HS.after_mlp, Variant.HS.equation) == (False, True, "Eq. 7")
    assert (Variant.MHA.method, Variant.HS.label) == ("headmap-mha", "HeadMap-HS")
    assert [m for m, spec in METHODS.items() if not spec.mergeable] == ["headmap-hs", "headmap-hs+lora",
                                                                         "headmap-hs+dora"]
    with pytest.raises(CircuitlabError, match="unknown HeadMap variant 'xs'; choose one of mha, hs"):
        HeadMapConfig(variant="xs", heads={0: [1]})


def test_a_variant_is_its_string():
    assert Variant("hs") is Variant.HS and Variant.HS == "hs" and {"hs": 1}[Variant.HS] == 1
    assert (str(Variant.MHA), f"{Variant.MHA}", json.dumps({"variant": Variant.HS})) == ("mha", "mha",
                                                                                         '{"variant": "hs"}')
    config = HeadMapConfig(variant="hs", heads={0: [1]})
    assert config.variant is Variant.HS
    assert json.loads(json.dumps(config.to_dict()))["variant"] == "hs"


@pytest.mark.parametrize("variant", ["mha", "hs"])
def test_plain_peft_round_trips_the_variant(tmp_path, variant):
    pm = get_peft_model(tiny_model("tiny-llama")[0], HeadMapConfig(variant=variant, heads={0: [1], 2: [0, 3]}, r=4))
    for m in maps(pm).values():
        randomize(m)
    with torch.no_grad():
        want = pm(input_ids=IDS).logits
    pm.save_pretrained(tmp_path / "a")
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["variant"] == variant
    assert PeftConfig.from_pretrained(str(tmp_path / "a")).variant is Variant(variant)
    loaded = PeftModel.from_pretrained(tiny_model("tiny-llama")[0], str(tmp_path / "a"))
    assert loaded.peft_config["default"].variant is Variant(variant)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=IDS).logits, want, atol=1e-6, rtol=0)
    adapter = AdapterDir.read(tmp_path / "a")
    assert (adapter.variant, adapter.kind, adapter.peft) == (Variant(variant), f"headmap-{variant}", True)
