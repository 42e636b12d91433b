"""Task prompts against real rows (expected strings worked out by hand from spec/tasks.md), plus bad input."""

import json

import pytest

from circuitlab.core.errors import CircuitlabError
from circuitlab.tasks import (TASK_NAMES, Doc, data_fingerprint, get_task, load_docs, load_rows,
                              resolve_data_dir)

PAPER_TASKS = ("boolq", "piqa", "siqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge",
               "openbookqa", "cola", "mrpc", "rte", "sst2", "wnli")


@pytest.fixture(autouse=True)
def _no_env_data(monkeypatch):
    monkeypatch.delenv("CIRCUITLAB_DATA", raising=False)


def doc_at(task, split, data_dir, index):
    docs = load_docs(task, split, data_dir, limit=index + 1)
    assert docs[index].index == index
    return docs[index]


# (task, split, row index, prompt, choices, gold)
CASES = [
    ("boolq", "validation", 0,
     "Please answer the following question with yes or no: does ethanol take more energy make that produces?"
     "\nAnswer:", (" yes", " no"), 1),
    ("boolq", "validation", 1,
     "Please answer the following question with yes or no: is house tax and property tax are same?\nAnswer:",
     (" yes", " no"), 0),
    ("piqa", "validation", 0,
     "Please choose the correct solution to the question: How do I ready a guinea pig cage for it's new "
     "occupants?\n\n(A) Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper "
     "strips, you will also need to supply it with a water bottle and a food dish.\n(B) Provide the guinea pig "
     "with a cage full of a few inches of bedding made of ripped jeans material, you will also need to supply it "
     "with a water bottle and a food dish.\n\nCorrect solution:", (" A", " B"), 0),
    ("piqa", "validation", 1,
     "Please choose the correct solution to the question: dresser\n\n(A) replace drawer with bobby pin \n"
     "(B) finish, woodgrain with  bobby pin \n\nCorrect solution:", (" A", " B"), 1),
    ("siqa", "validation", 0,
     "Please choose the correct answer to the question: Tracy didn't go home that evening and resisted Riley's "
     "attacks. What does Tracy need to do before this?\n(A) make a new plan (B) Go home and see Riley "
     "(C) Find somewhere to go\nAnswer:", (" A", " B", " C"), 2),
    ("siqa", "train", 1,  # read from train.jsonl.gz
     "Please choose the correct answer to the question: Jan needed to give out jobs for an upcoming project at "
     "work. What will Others want to do next?\n(A) disagree with Jan (B) get to work (C) argue with the "
     "assignments\nAnswer:", (" A", " B", " C"), 1),
    ("hellaswag", "validation", 0,  # ctx_b "a few women" is capitalized
     "Please choose the correct ending to complete the given sentence: Pole vault: Pole vault is a sport where "
     "you run with a pole and stop and swing your body. A few women (A) go down a rock and stop. (B) watch from "
     "around a pole vault. (C) are in the wading pool. (D) are in the gym practicing to do this pole vault, "
     "trying to do their best.\n\nAnswer:", (" A", " B", " C", " D"), 3),
    ("hellaswag", "validation", 3,  # WikiHow row: [header]/[title]/[step]/[substeps], empty ctx_b
     "Please choose the correct ending to complete the given sentence: Sports and Fitness: How to bowl the leg "
     "spinner's variations. To bowl a googly, you grip the ball the same as you would for a leg break but hold "
     "it so your palm faces away from you. As you bowl, you bring your elbow close to your head and cock your "
     "wrist so that back of your hand faces the batsman. You spin the ball by rotating the fingers."
     " (A)  If you're outside, the batsman only looks at the batsman as they dribble.. If you're inside, the "
     "batsman lets you line up the batsman with you."
     " (B) Bring your wrist back towards your head so that the ball is back in front of your body and your fist "
     "will be holding the ball. A barbell is not needed for this style of bowl."
     " (C) If done properly, the ball should turn from off to leg for right handers. If the batsman comes out of "
     "his crease and misses the googly, he can be stumped."
     " (D)  Only let the ball hit your side as you come out of the ball, not your core. Remember to rotate your "
     "wrist so your hand reaches over your head, not away from it.\n\nAnswer:", (" A", " B", " C", " D"), 2),
    ("winogrande", "validation", 0,
     "Please choose the correct answer to fill in the blank to complete the given sentence: Sarah was a much "
     "better surgeon than Maria so _ always got the easier cases.\n(A) Sarah (B) Maria\nAnswer:", (" A", " B"), 1),
    ("winogrande", "train", 1,
     "Please choose the correct answer to fill in the blank to complete the given sentence: Ian volunteered to "
     "eat Dennis's menudo after already having a bowl because _ enjoyed eating intestine.\n(A) Ian (B) Dennis"
     "\nAnswer:", (" A", " B"), 0),
    ("arc_easy", "test", 14,  # digit labels 1..4 -> A..D
     "Please choose the correct answer to the question: All living and nonliving material is composed of "
     "(A) air (B) elements (C) water (D) soil\nAnswer:", (" A", " B", " C", " D"), 1),
    ("arc_easy", "validation", 0,
     "Please choose the correct answer to the question: Which technology was developed most recently? "
     "(A) cellular telephone (B) television (C) refrigerator (D) airplane\nAnswer:", (" A", " B", " C", " D"), 0),
    ("arc_challenge", "train", 16,  # digit labels
     "Please choose the correct answer to the question: A chemical property of a mineral is evident if the "
     "mineral (A) breaks easily when struck with a hammer (B) bubbles when acid is placed on it (C) is easily "
     "scratched by a fingernail (D) reflects light from its surface\nAnswer:", (" A", " B", " C", " D"), 1),
    ("arc_challenge", "validation", 210,  # five choices
     "Please choose the correct answer to the question: Which of the following organs is NOT situated in the "
     "abdomen? (A) liver (B) kidney (C) stomach (D) bladder (E) heart\nAnswer:",
     (" A", " B", " C", " D", " E"), 4),
    ("openbookqa", "test", 1,
     "Please choose the correct answer to the question: There is most likely going to be fog around: "
     "(A) a marsh (B) a tundra (C) the plains (D) a desert\nAnswer:", (" A", " B", " C", " D"), 0),
    ("openbookqa", "validation", 1,
     "Please choose the correct answer to the question: Gas can fill any container it is given, and liquid "
     "(A) is standard weight and size (B) is the opposite of variable (C) only needs a few (D) uses what it needs"
     "\nAnswer:", (" A", " B", " C", " D"), 3),
    ("cola", "validation", 0,
     "The sailors rode the breeze clear of the rocks.\nQuestion: Does this sentence make sense?\nAnswer:",
     (" yes", " no"), 0),
    ("cola", "validation", 4,
     "As you eat the most, you want the least.\nQuestion: Does this sentence make sense?\nAnswer:",
     (" yes", " no"), 1),
    ("mrpc", "validation", 0,  # detok: " 's" -> "'s", " ." -> ".", '" ' -> '"'
     "Sentence 1: He said the foodservice pie business doesn't fit the company's long-term growth strategy.\n"
     "Sentence 2: \"The foodservice pie business does not fit our long-term growth strategy.\n"
     "Question: Do both sentences mean the same thing?\nAnswer:", (" yes", " no"), 0),
    ("mrpc", "train", 0,
     "Sentence 1: Amrozi accused his brother, whom he called\"the witness\", of deliberately distorting his "
     "evidence.\nSentence 2: Referring to him as only\"the witness\", Amrozi accused his brother of deliberately "
     "distorting his evidence.\nQuestion: Do both sentences mean the same thing?\nAnswer:", (" yes", " no"), 0),
    ("mrpc", "train", 1,
     "Sentence 1: Yucaipa owned Dominick's before selling the chain to Safeway in 1998 for $ 2.5 billion.\n"
     "Sentence 2: Yucaipa bought Dominick's in 1995 for $ 693 million and sold it to Safeway for $ 1.8 billion "
     "in 1998.\nQuestion: Do both sentences mean the same thing?\nAnswer:", (" yes", " no"), 1),
    ("rte", "validation", 0,
     "Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44, according to the "
     "Christopher Reeve Foundation.\nQuestion: Christopher Reeve had an accident. True or False?\nAnswer:",
     (" True", " False"), 1),
    ("rte", "validation", 1,
     "Yet, we now are discovering that antibiotics are losing their effectiveness against illness. "
     "Disease-causing bacteria are mutating faster than we can come up with new antibiotics to fight the new "
     "variations.\nQuestion: Bacteria is winning the war against antibiotics. True or False?\nAnswer:",
     (" True", " False"), 0),
    ("sst2", "validation", 0,  # trailing space of the GLUE file kept
     "it's a charming and often affecting journey. \nQuestion: Is this sentence positive or negative?\nAnswer:",
     (" positive", " negative"), 0),
    ("sst2", "validation", 8,  # " n't" -> "n't"
     "you don't have to know about music to appreciate the film's easygoing blend of comedy and romance. "
     "\nQuestion: Is this sentence positive or negative?\nAnswer:", (" positive", " negative"), 0),
    ("sst2", "validation", 1,
     "unflinchingly bleak and desperate \nQuestion: Is this sentence positive or negative?\nAnswer:",
     (" positive", " negative"), 1),
    ("wnli", "validation", 0,
     "The drain is clogged with hair. It has to be cleaned.\nQuestion: The hair has to be cleaned. True or False?"
     "\nAnswer:", (" True", " False"), 1),
    ("wnli", "validation", 1,
     "Jane knocked on Susan's door but she did not answer.\nQuestion: Susan did not answer. True or False?"
     "\nAnswer:", (" True", " False"), 0),
]


def test_cases_cover_every_paper_task():
    assert {c[0] for c in CASES} == set(PAPER_TASKS)


@pytest.mark.parametrize("task,split,index,prompt,choices,gold", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_real_rows(data_dir, task, split, index, prompt, choices, gold):
    doc = doc_at(task, split, data_dir, index)
    assert doc.prompt == prompt
    assert doc.choices == choices
    assert doc.gold == gold
    assert doc.target == choices[gold]


def test_task_names_and_registry():
    assert TASK_NAMES == PAPER_TASKS + ("capitals",)
    for name in TASK_NAMES:
        assert get_task(name).name == name


def test_eval_splits_and_metrics():
    tests = {"arc_easy", "arc_challenge", "openbookqa"}
    for name in TASK_NAMES:
        task = get_task(name)
        assert task.eval_split == ("test" if name in tests else "validation")
        extra = {"cola": ("mcc",), "mrpc": ("f1",)}.get(name, ())
        assert task.metrics == ("acc", "acc_norm") + extra


def test_hub_ids():
    ids = {n: (get_task(n).hub_id, get_task(n).hub_config) for n in PAPER_TASKS}
    assert ids["boolq"] == ("super_glue", "boolq")
    assert ids["hellaswag"] == ("Rowan/hellaswag", None)
    assert ids["winogrande"] == ("winogrande", "winogrande_xl")
    assert ids["arc_challenge"][1] == "ARC-Challenge" and ids["arc_easy"][1] == "ARC-Easy"
    assert ids["openbookqa"] == ("openbookqa", "main")
    assert ids["siqa"] == ("social_i_qa", None) and ids["piqa"] == ("piqa", None)
    assert ids["rte"] == ("nyu-mll/glue", "rte")


def test_every_split_loads_with_valid_docs(data_dir):
    for name in PAPER_TASKS:
        task = get_task(name)
        docs = task.docs(task.eval_split, data_dir)
        assert [d.index for d in docs] == list(range(len(docs)))
        assert all(0 <= d.gold < len(d.choices) and all(c.startswith(" ") for c in d.choices) for d in docs)


def test_rows_limit_env_and_fingerprint(data_dir, monkeypatch):
    rows = load_rows(get_task("rte"), "validation", data_dir)
    assert len(rows) == 277 and rows[0]["idx"] == 0
    docs = load_docs("rte", "validation", data_dir, limit=5)
    assert len(docs) == 5
    monkeypatch.setenv("CIRCUITLAB_DATA", str(data_dir))
    assert resolve_data_dir(None) == data_dir
    assert load_docs("rte", "validation", limit=5) == docs  # env var picked up
    fp = data_fingerprint(docs)
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert fp == data_fingerprint(load_docs("rte", "validation", limit=5))
    assert fp != data_fingerprint(docs[:4])
    assert Doc("p", (" a", " b"), 1, 0).target == " b"


# ---------------------------------------------------------------- capitals

def test_capitals():
    train, val = load_docs("capitals", "train"), load_docs("capitals", "validation")
    assert len(train) + len(val) >= 150
    assert [d.index for d in val] == list(range(len(val)))
    assert not {d.prompt for d in train} & {d.prompt for d in val}
    answers = {d.prompt: d.target for d in train + val}
    for country, capital in [("Australia", "Canberra"), ("Canada", "Ottawa"), ("Turkey", "Ankara"),
                             ("Nigeria", "Abuja"), ("Japan", "Tokyo"), ("France", "Paris")]:
        assert answers[f"Question: What is the capital of {country}?\nAnswer:"] == " " + capital
    for d in train + val:
        assert len(d.choices) == 4 and len(set(d.choices)) == 4 and 0 <= d.gold < 4
        assert all(c.startswith(" ") for c in d.choices)
    assert load_docs("capitals", "validation") == val  # deterministic
    assert len({d.gold for d in val}) == 4  # the true answer moves around
    assert get_task("capitals").eval_split == "validation"


def test_capitals_ignores_data_dir(tmp_path):
    assert load_docs("capitals", "validation", tmp_path) == load_docs("capitals", "validation")
    with pytest.raises(CircuitlabError, match="no 'test' split"):
        load_docs("capitals", "test")


# ---------------------------------------------------------------- custom tasks

def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_custom_task(tmp_path):
    path = write(tmp_path / "mine.jsonl", [
        json.dumps({"prompt": "2+2=", "choices": [" 4", " 5"], "gold": 0}),
        "",
        json.dumps({"prompt": "Sky is", "choices": [" green", " blue", " red"], "gold": 1, "extra": 1}),
    ])
    task = get_task(str(path))
    assert task.name == "mine" and task.eval_split == "validation" and task.metrics == ("acc", "acc_norm")
    docs = task.docs("validation")
    assert docs == [Doc("2+2=", (" 4", " 5"), 0, 0), Doc("Sky is", (" green", " blue", " red"), 1, 1)]
    assert load_docs(str(path), "train") == docs


@pytest.mark.parametrize("lines,fragment", [
    (['{"prompt": "a", "choices": [" b"], "gold": 0}', '{"prompt": "a", '], "line 2: malformed JSON"),
    (['{"prompt": "a", "choices": [" b", " c"], "gold": 2}'], "line 1: bad row for task 'bad' ('gold' must be"),
    (['{"prompt": "a", "choices": [], "gold": 0}'], "line 1: bad row for task 'bad' ('choices' must be"),
    (['{"choices": [" b"], "gold": 0}'], "line 1: bad row for task 'bad' ('prompt' must be"),
    (['[1, 2]'], "line 1: expected a JSON object"),
])
def test_custom_task_bad_rows(tmp_path, lines, fragment):
    path = write(tmp_path / "bad.jsonl", lines)
    with pytest.raises(CircuitlabError) as e:
        load_docs(str(path), "validation")
    assert fragment in str(e.value) and "bad.jsonl" in str(e.value)


# ---------------------------------------------------------------- bad input

def test_unknown_task():
    with pytest.raises(CircuitlabError, match="unknown task 'nope'.*boolq, piqa"):
        get_task("nope")
    with pytest.raises(CircuitlabError, match="does not exist"):
        get_task("no/such/file.jsonl")


def test_missing_data_dir(tmp_path):
    with pytest.raises(CircuitlabError, match="data directory .*missing does not exist"):
        load_docs("rte", "validation", tmp_path / "missing")


def test_missing_split(data_dir):
    with pytest.raises(CircuitlabError) as e:
        load_docs("boolq", "test", data_dir)
    msg = str(e.value)
    assert "task 'boolq' has no 'test' split in" in msg and "boolq" in msg
    assert msg.endswith("(available: train, validation)")


def test_the_new_training_splits_of_boolq_and_hellaswag(data_dir):
    """boolq train: questions and answers only (the prompt needs nothing more); hellaswag train: the
    first 3,368 rows of the official split."""
    boolq = load_docs("boolq", "train", data_dir)
    assert len(boolq) == 9427 and sum(d.gold == 0 for d in boolq) == 5874  # 5874 true (" yes"), 3553 false
    assert boolq[0].prompt.startswith("Please answer the following question with yes or no: ")
    assert boolq[0].prompt.endswith("?\nAnswer:") and boolq[0].choices == (" yes", " no")
    hellaswag = load_docs("hellaswag", "train", data_dir)
    assert len(hellaswag) == 3368 and [sum(d.gold == k for d in hellaswag) for k in range(4)] == [824, 855, 847, 842]
    assert "Removing ice from car" in hellaswag[0].prompt and hellaswag[0].choices == (" A", " B", " C", " D")


def test_empty_split_and_missing_field(tmp_path):
    (tmp_path / "rte").mkdir()
    write(tmp_path / "rte" / "validation.jsonl", [])
    with pytest.raises(CircuitlabError, match="task 'rte' split 'validation' has no rows"):
        load_docs("rte", "validation", tmp_path)
    write(tmp_path / "rte" / "train.jsonl", ['{"sentence1": "a", "label": 0, "idx": 0}'])
    with pytest.raises(CircuitlabError, match=r"train.jsonl line 1: missing field 'sentence2'"):
        load_docs("rte", "train", tmp_path)
    write(tmp_path / "rte" / "train.jsonl", ['{"sentence1": "a", "sentence2": "b", "label": 7}'])
    with pytest.raises(CircuitlabError, match="line 1: gold 7 out of range"):
        load_docs("rte", "train", tmp_path)


@pytest.mark.parametrize("reachable", [True, False])
def test_hub_unreachable(monkeypatch, reachable):
    import datasets
    import huggingface_hub.constants

    from circuitlab.models import hub

    calls = []

    def offline(*args, **kwargs):
        calls.append((args, kwargs, datasets.config.HF_HUB_OFFLINE))
        raise ConnectionError("no network\nsecond line")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setattr(hub, "local_only", lambda: not reachable)
    for module in (datasets.config, huggingface_hub.constants):  # restored after the test
        monkeypatch.setattr(module, "HF_HUB_OFFLINE", module.HF_HUB_OFFLINE)
    with pytest.raises(CircuitlabError) as e:
        load_docs("boolq", "validation")
    # Out of reach, datasets runs in its offline mode: the cache or one error at once, no retries.
    assert calls == [(("super_glue", "boolq"), {"split": "validation"}, not reachable or calls[0][2])]
    msg = str(e.value)
    assert "from the Hugging Face hub" in msg and "--data-dir" in msg and "\n" not in msg
    assert ("not in the local cache" in msg) == (not reachable) and ("ConnectionError" in msg) == reachable


def test_hub_rows_super_glue_boolq_schema(monkeypatch):
    import datasets

    rows = [{"question": "is it", "passage": "p", "idx": 0, "label": 1},
            {"question": "is it not", "passage": "p", "idx": 1, "label": 0}]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: rows)
    docs = load_docs("boolq", "validation")
    assert [d.gold for d in docs] == [0, 1]
    assert docs[0].prompt == "Please answer the following question with yes or no: is it?\nAnswer:"
