"""`SampleConfig.rows`: samples selected among given rows of a split only (a study's disjoint locating pools)."""

import pytest

from circuitlab.core.errors import CircuitlabError, ConfigError
from circuitlab.locate.job import LocateInputs
from circuitlab.locate.config import LocateConfig
from circuitlab.locate.samples import SampleConfig
from circuitlab.tasks import load_docs


def test_rows_pick_the_docs_samples_come_from(tmp_path):
    sampling = SampleConfig(n=2, rows=(40, 3, 17))
    inputs = LocateInputs.read("tiny-llama", "capitals", None, sampling, LocateConfig(n_per_layer=1),
                               out=tmp_path / "c.json")
    docs = load_docs("capitals", "train")
    assert [d.index for d in inputs.docs] == [40, 3, 17] and inputs.docs[1].prompt == docs[3].prompt


@pytest.mark.parametrize("kw, match", [
    ({"rows": (1, 1)}, "lists a row twice"),
    ({"rows": (-1,)}, "non-negative"),
    ({"rows": (1,), "max_docs": 5}, "leave out --max-docs"),
])
def test_bad_rows_are_refused(kw, match):
    with pytest.raises(ConfigError, match=match):
        SampleConfig(**kw)


def test_a_row_past_the_split_is_refused(tmp_path):
    with pytest.raises(CircuitlabError, match="names row 500, but the train split has 126 docs"):
        LocateInputs.read("tiny-llama", "capitals", None, SampleConfig(rows=(500,)), LocateConfig(n_per_layer=1),
                          out=tmp_path / "c.json")
