"""The official code's info.pt: export then import gives the same circuit; reading never unpickles code."""

import math

import pytest
import torch

from circuitlab.circuits.circuit import Circuit, ModelInfo, TaskInfo
from circuitlab.core.errors import CircuitlabError
from circuitlab.circuits.official import circuit_from_info, config_model_info, info_from_circuit, read_info, write_info

H, L = 8, 4


def model_info() -> ModelInfo:
    return ModelInfo("tiny-llama-gqa", "tiny-llama-gqa", None, "", L, H, 2, 8, 64)


def located() -> Circuit:
    scores = [[float(10 * layer + h) * (-1) ** h for h in range(H)] for layer in range(L)]
    return Circuit(model_info(), TaskInfo("capitals", "train"), [], "layer-conditioned", 2,
                   {0: [2, 6], 1: [0, 4], 2: [2, 4], 3: [0, 6]}, selected_by="conditioned",
                   scores={"conditioned": scores})


class Payload:
    """Anything but plain data: unpickling it would need this class (code)."""


def test_export_then_import_gives_the_same_heads_and_scores(tmp_path):
    c = located()
    path = write_info(c, tmp_path / "info.pt")
    back = circuit_from_info(path, model_info(), TaskInfo("capitals", "train"))
    assert back.heads == c.heads and back.n_per_layer == 2 and back.protocol == "official"
    assert back.scores["conditioned"] == c.scores["conditioned"]  # float32 holds these integers exactly


def test_exported_file_is_the_official_layout(tmp_path):
    raw = torch.load(write_info(located(), tmp_path / "info.pt"), weights_only=True)
    # the official code keeps heads as torch.topk ordered them: highest masked loss first
    assert raw["knowledge_circuit"][1] == {"retain_heads": [4, 0]}
    assert raw["knowledge_circuit"][0] == {"retain_heads": [6, 2]}
    assert raw["scores"].shape == (H, L) and raw["scores"][4, 1].item() == 14.0  # heads x layers
    assert [layer for layer, _ in raw["path"]] == [0, 1, 2, 3]


def test_official_files_written_by_the_official_code_read(tmp_path):
    """As locating.py saves it: int layer keys, tensors from torch.topk, the score table transposed."""
    table = torch.randn(3, H)  # 3 located layers (1..3), H heads each
    path_ = [(layer, torch.topk(table[i], k=2).indices) for i, layer in enumerate([1, 2, 3])]
    info = {"scores": table.T, "path": path_,
            "knowledge_circuit": {layer: {"retain_heads": heads.tolist()} for layer, heads in path_}}
    torch.save(info, tmp_path / "info.pt")
    c = circuit_from_info(tmp_path / "info.pt", model_info())
    assert c.heads == {layer: sorted(heads.tolist()) for layer, heads in path_}
    assert all(math.isnan(x) for x in c.scores["conditioned"][0])
    assert c.scores["conditioned"][2] == pytest.approx(table[1].tolist())
    assert c.run.layers == [1, 3]


def test_a_pickle_that_needs_code_is_refused_in_one_line_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"knowledge_circuit": {0: {"retain_heads": [1]}}, "extra": Payload()}, tmp_path / "class.pt")

    class Opens:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # would create `marker` if unpickled

    torch.save({"knowledge_circuit": {0: {"retain_heads": [1]}}, "x": Opens()}, tmp_path / "code.pt")
    for name in ("class.pt", "code.pt"):
        with pytest.raises(CircuitlabError) as e:
            read_info(tmp_path / name)
        assert "never unpickles code" in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("content, match", [
    ({"scores": torch.zeros(2)}, "no 'knowledge_circuit'"),
    ({"knowledge_circuit": {0: {"heads": [1]}}}, "malformed"),
    ({"knowledge_circuit": {}}, "no layers"),
    ({"knowledge_circuit": {9: {"retain_heads": [1]}}}, "out of range"),
])
def test_bad_files_are_one_line(tmp_path, content, match):
    torch.save(content, tmp_path / "info.pt")
    with pytest.raises(CircuitlabError, match=match):
        circuit_from_info(tmp_path / "info.pt", model_info())
    (tmp_path / "broken.pt").write_bytes(b"not a torch file")
    with pytest.raises(CircuitlabError, match="not a readable torch file"):
        read_info(tmp_path / "broken.pt")


def test_a_circuit_without_its_score_table_exports_sorted_heads(tmp_path):
    c = located()
    c.scores = {}
    info = info_from_circuit(c)
    assert info["knowledge_circuit"][0]["retain_heads"] == [2, 6] and "scores" not in info


def test_model_info_from_the_config_alone_checks_dimensions_not_weights(tiny_gqa, tmp_path):
    info = config_model_info("tiny-llama-gqa")
    assert info.dims == tiny_gqa.dims and info.fingerprint == ""
    c = circuit_from_info(write_info(located(), tmp_path / "info.pt"), info)
    c.validate(tiny_gqa)  # the same dimensions: accepted (the file names no weights)


def test_circuit_load_points_an_info_pt_to_the_converter(tmp_path):
    path = write_info(located(), tmp_path / "info.pt")
    with pytest.raises(CircuitlabError, match="official-import"):
        Circuit.load(path)
