"""A deterministic generator of fictional domain data: maintenance manuals for made-up machines,
with span-extraction questions in the SQuAD/CMRC schema.

Used by ``ragtune demo`` (and tests) because it needs no download, is new to any pre-trained model
(so the base model cannot know the answers), and every answer is an exact span of its passage.
Same seed -> byte-identical output.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

BRANDS = ["Varnok", "Quillon", "Tessaro", "Brannic", "Okuma-Vel", "Dravik", "Lumetra", "Corvane",
          "Haldur", "Ysolde", "Piketon", "Marrow & Finch", "Zenthar", "Oblique", "Kestrel"]
MACHINES = ["centrifugal pump", "air compressor", "heat exchanger", "conveyor motor", "hydraulic press",
            "cooling tower fan", "vacuum pump", "gear reducer", "boiler feed pump", "dust extractor"]
PLANTS = ["Arlen", "Brisk Hollow", "Castamere", "Dunmore", "Elbridge", "Fallowmere", "Greyhaven",
          "Hartwell", "Ivel Cross", "Juniper Bay", "Kelderwick", "Lowmarsh"]
LUBRICANTS = ["Grade K7 synthetic oil", "Lithium-X2 grease", "ISO VG 46 turbine oil",
              "Polyglide 220 gear oil", "Silvane food-grade grease", "Marlin HD-15 oil"]
FAULTS = ["a blocked intake valve", "a worn drive belt", "low lubricant pressure", "an overheated bearing",
          "a loose terminal screw", "a failed pressure sensor", "a clogged return filter",
          "excessive shaft vibration"]


@dataclass(frozen=True)
class Machine:
    name: str
    kind: str
    plant: str
    interval: str
    filter_part: str
    pressure: str
    temp_range: str
    warranty: str
    lubricant: str
    fault_code: str
    fault: str


def _machine(rng: random.Random, used: set[str]) -> Machine:
    while True:
        name = f"{rng.choice(BRANDS)} {rng.choice('ABCDEFHKMPRSTVXZ')}{rng.choice('ABCDEFHKMPRSTVXZ')}-{rng.randint(100, 990)}"
        if name not in used:
            used.add(name)
            break
    low = rng.choice([-30, -25, -20, -15, -10, -5, 0, 5])
    return Machine(
        name=name, kind=rng.choice(MACHINES), plant=f"{rng.choice(PLANTS)} plant",
        interval=f"every {rng.choice([250, 400, 500, 750, 1000, 1200, 1500, 2000, 3000])} operating hours",
        filter_part=f"{rng.choice(['FP', 'FX', 'KF', 'RF'])}-{rng.randint(1000, 9999)}",
        pressure=f"{rng.randint(2, 40)}.{rng.randint(0, 9)} bar",
        temp_range=f"{low} °C to {low + rng.choice([40, 45, 50, 55, 60, 70])} °C",
        warranty=f"{rng.choice([12, 18, 24, 30, 36, 48, 60])} months",
        lubricant=rng.choice(LUBRICANTS),
        fault_code=f"E-{rng.randint(100, 899)}", fault=rng.choice(FAULTS))


# (field, sentence templates that contain {value}, question templates)
FACTS = [
    ("plant", ["The {name} is a {kind} assembled at the {value}.",
               "Every {name} unit leaves the {value} after a 48-hour burn-in test."],
     ["Where is the {name} assembled?", "Which plant builds the {name}?"]),
    ("interval", ["Routine service for the {name} is due {value}.",
                  "Technicians must inspect the {name} {value}."],
     ["How often does the {name} need routine service?", "When is service due for the {name}?"]),
    ("filter_part", ["The replacement filter for the {name} has part number {value}.",
                     "Use only filter {value} when servicing the {name}."],
     ["What is the part number of the {name} replacement filter?", "Which filter does the {name} use?"]),
    ("pressure", ["The maximum working pressure of the {name} is {value}.",
                  "Never run the {name} above {value}."],
     ["What is the maximum working pressure of the {name}?", "What pressure must the {name} never exceed?"]),
    ("temp_range", ["The {name} is rated for ambient temperatures from {value}.",
                    "Operate the {name} only at ambient temperatures of {value}."],
     ["What ambient temperature range is the {name} rated for?", "In what temperature range can the {name} operate?"]),
    ("warranty", ["The {name} carries a warranty of {value}.",
                  "Manufacturer cover for the {name} lasts {value}."],
     ["How long is the warranty of the {name}?", "How long does manufacturer cover for the {name} last?"]),
    ("lubricant", ["Bearings of the {name} are lubricated with {value}.",
                   "The {name} ships pre-filled with {value}."],
     ["Which lubricant does the {name} use?", "What is the {name} pre-filled with?"]),
    ("fault", ["Fault code {code} on the {name} display indicates {value}.",
               "If the {name} shows {code}, the cause is {value}."],
     ["What does fault code {code} indicate on the {name}?", "What causes fault code {code} on the {name}?"]),
]

DISTRACTORS = ["Keep the service log next to the machine.", "Wear protective gloves during maintenance.",
               "Spare parts are listed in appendix C.", "Isolate the power supply before opening any cover.",
               "Record every alarm in the plant maintenance system.", "Clean the housing with a dry cloth only."]


def make_manual(machine: Machine, rng: random.Random) -> tuple[str, dict[str, str]]:
    """A passage about one machine, plus the exact value text of each fact."""
    sentences, values = [], {}
    for field, templates, _ in FACTS:
        value = getattr(machine, field)
        values[field] = value
        sentences.append(rng.choice(templates).format(name=machine.name, kind=machine.kind, value=value,
                                                      code=machine.fault_code))
    rng.shuffle(sentences)
    sentences.insert(rng.randint(1, len(sentences)), rng.choice(DISTRACTORS))
    intro = f"{machine.name} maintenance manual."
    return " ".join([intro, *sentences]), values


def generate_manuals(n_machines: int = 60, questions_per_machine: int = 4, seed: int = 0) -> list[dict]:
    """SQuAD/CMRC-schema records ``{id, context, question, answers: {text, answer_start}}``."""
    rng = random.Random(seed)
    used: set[str] = set()
    records = []
    for i in range(n_machines):
        machine = _machine(rng, used)
        context, values = make_manual(machine, rng)
        for j, (field, _, questions) in enumerate(rng.sample(FACTS, k=min(questions_per_machine, len(FACTS)))):
            answer = values[field]
            start = context.index(answer)
            question = rng.choice(questions).format(name=machine.name, code=machine.fault_code)
            records.append({"id": f"MANUAL_{i}_QUERY_{j}", "context": context, "question": question,
                            "answers": {"text": [answer], "answer_start": [start]}})
    return records


def split_by_passage(records: list[dict], eval_fraction: float = 0.2, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Train/eval split by passage (no passage appears in both), deterministic per seed."""
    contexts = sorted({r["context"] for r in records})
    random.Random(seed).shuffle(contexts)
    held = set(contexts[: max(1, int(len(contexts) * eval_fraction))])
    return [r for r in records if r["context"] not in held], [r for r in records if r["context"] in held]
