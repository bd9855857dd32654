"""A deterministic generator of the chapter's structured-output task: free-text clinic notes ->
one JSON record with nested fields, numbers and units.

The chapter's example ("the patient exhibits symptoms of hypertension and the systolic blood
pressure is 150mmHg" -> JSON) as data ragtune can make offline: fictional patients, visits,
symptoms, vitals (numbers with their units, written several ways in the note: ``150/95 mmHg``,
``BP of 150 over 95``), made-up drug names (new to any pre-trained model) and lab results. Each
note also carries the lab system's export as a JSON block, the part ``ragtune data augment-json``
corrupts (``source: input``), so a benchmark can score clean and corrupted inputs. Facts appear in
a random order and phrasing; fields absent from a note are absent from its record (no invented
values). Same seed -> byte-identical output. Used by ``benchmarks/structured_output.py``.
"""
from __future__ import annotations

import json
import random
from typing import Any

INSTRUCTION = ("Extract the clinic note into one JSON object with the keys patient, visit, vitals, symptoms, "
               "diagnosis, medications and labs. Copy numbers and units as written; leave out what the note "
               "does not say. Answer with the JSON only.")

DEPARTMENTS = ["cardiology", "neurology", "general medicine", "endocrinology", "pulmonology", "nephrology"]
SYMPTOMS = ["headache", "dizziness", "chest pain", "shortness of breath", "fatigue", "nausea", "palpitations",
            "blurred vision", "night sweats", "joint pain", "persistent cough", "swollen ankles"]
DIAGNOSES = ["hypertension", "type 2 diabetes", "migraine", "asthma", "atrial fibrillation", "hypothyroidism",
             "chronic kidney disease", "community-acquired pneumonia", "iron deficiency anaemia"]
DRUGS = ["Veltrazine", "Olmacor", "Duraprine", "Kestovil", "Zymaphen", "Tarvelin", "Quorimab", "Lisentra",
         "Brimofex", "Nolvatide", "Cardexol", "Fentrisan"]
FREQUENCIES = ["once daily", "twice daily", "three times daily", "every 8 hours", "at night", "as needed"]
LABS = [("glucose", "mmol/L", (4.0, 11.0), 1), ("HbA1c", "%", (5.0, 9.5), 1), ("creatinine", "umol/L", (55, 190), 0),
        ("haemoglobin", "g/dL", (8.5, 16.5), 1), ("potassium", "mmol/L", (3.2, 5.6), 1),
        ("TSH", "mIU/L", (0.3, 9.0), 2), ("LDL cholesterol", "mmol/L", (1.5, 5.5), 1)]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
_SEX_WORDS = {"female": ["woman", "female patient", "woman"], "male": ["man", "male patient", "man"]}
_PRONOUN = {"female": "She", "male": "He"}


def record_schema() -> dict[str, Any]:
    """The JSON Schema every generated record follows (for ``json_schema_valid`` and for
    ``response_format: json_schema``)."""
    num_unit = {"type": "object", "properties": {"value": {"type": "number"}, "unit": {"type": "string"}},
                "required": ["value", "unit"], "additionalProperties": False}
    return {
        "type": "object",
        "properties": {
            "patient": {"type": "object", "properties": {
                "id": {"type": "string"}, "age": {"type": "integer"}, "sex": {"enum": ["female", "male"]}},
                "required": ["id", "age", "sex"], "additionalProperties": False},
            "visit": {"type": "object", "properties": {
                "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"}, "department": {"type": "string"}},
                "required": ["date", "department"], "additionalProperties": False},
            "vitals": {"type": "object", "properties": {
                "blood_pressure": {"type": "object", "properties": {
                    "systolic": {"type": "integer"}, "diastolic": {"type": "integer"}, "unit": {"const": "mmHg"}},
                    "required": ["systolic", "diastolic", "unit"], "additionalProperties": False},
                "heart_rate": num_unit, "temperature": num_unit, "weight": num_unit},
                "required": ["blood_pressure", "heart_rate"], "additionalProperties": False},
            "symptoms": {"type": "array", "items": {"type": "string"}},
            "diagnosis": {"type": "string"},
            "medications": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "dose": num_unit, "frequency": {"type": "string"}},
                "required": ["name", "dose", "frequency"], "additionalProperties": False}},
            "labs": {"type": "array", "items": {"type": "object", "properties": {
                "test": {"type": "string"}, "value": {"type": "number"}, "unit": {"type": "string"}},
                "required": ["test", "value", "unit"], "additionalProperties": False}},
        },
        "required": ["patient", "visit", "vitals", "symptoms", "diagnosis", "medications", "labs"],
        "additionalProperties": False,
    }


def make_record(rng: random.Random, used_ids: set[str]) -> dict[str, Any]:
    """One visit as the target JSON."""
    while True:
        pid = f"P-{rng.randint(1000, 9999)}"
        if pid not in used_ids:
            used_ids.add(pid)
            break
    sex = rng.choice(["female", "male"])
    vitals: dict[str, Any] = {
        "blood_pressure": {"systolic": rng.randint(100, 185), "diastolic": rng.randint(60, 115), "unit": "mmHg"},
        "heart_rate": {"value": rng.randint(52, 128), "unit": "bpm"},
    }
    if rng.random() < 0.7:
        vitals["temperature"] = (
            {"value": round(rng.uniform(36.1, 39.6), 1), "unit": "°C"} if rng.random() < 0.7
            else {"value": round(rng.uniform(97.0, 103.2), 1), "unit": "°F"})
    if rng.random() < 0.6:
        vitals["weight"] = ({"value": round(rng.uniform(48, 118), 1), "unit": "kg"} if rng.random() < 0.7
                            else {"value": rng.randint(105, 260), "unit": "lb"})
    meds = [{"name": name, "dose": {"value": rng.choice([2.5, 5, 10, 20, 25, 50, 100, 250, 500]),
                                    "unit": rng.choice(["mg", "mg", "mcg"])},
             "frequency": rng.choice(FREQUENCIES)} for name in rng.sample(DRUGS, rng.choice([0, 1, 1, 2]))]
    labs = []
    for test, unit, (lo, hi), digits in rng.sample(LABS, rng.choice([0, 1, 2, 3])):
        value = round(rng.uniform(lo, hi), digits)
        labs.append({"test": test, "value": int(value) if digits == 0 else value, "unit": unit})
    return {
        "patient": {"id": pid, "age": rng.randint(19, 91), "sex": sex},
        "visit": {"date": f"{rng.randint(2021, 2025)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                  "department": rng.choice(DEPARTMENTS)},
        "vitals": vitals,
        "symptoms": rng.sample(SYMPTOMS, rng.choice([1, 2, 2, 3])),
        "diagnosis": rng.choice(DIAGNOSES),
        "medications": meds,
        "labs": labs,
    }


def _date_text(date: str, rng: random.Random) -> str:
    y, m, d = date.split("-")
    return rng.choice([f"{int(d)} {MONTHS[int(m) - 1]} {y}", f"{MONTHS[int(m) - 1]} {int(d)}, {y}", date])


def _num(x: float) -> str:
    return str(x)  # as json.dumps writes it (72.0 stays 72.0), so note and record agree


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def make_note(rec: dict[str, Any], rng: random.Random) -> str:
    """The free-text note a clinician would write for ``rec`` (sentences in random order), with
    the lab export appended as a JSON block when there are labs."""
    p, v, vit = rec["patient"], rec["visit"], rec["vitals"]
    she = _PRONOUN[p["sex"]]
    head = rng.choice([
        f"Patient {p['id']}, a {p['age']}-year-old {rng.choice(_SEX_WORDS[p['sex']])}, was seen in {v['department']} on {_date_text(v['date'], rng)}.",
        f"{_date_text(v['date'], rng)}, {v['department']} clinic: {p['id']} ({p['sex']}, {p['age']} years).",
    ])
    bp = vit["blood_pressure"]
    vit_parts = [rng.choice([f"blood pressure {bp['systolic']}/{bp['diastolic']} mmHg",
                             f"BP of {bp['systolic']} over {bp['diastolic']} mmHg"]),
                 rng.choice([f"pulse {vit['heart_rate']['value']} bpm", f"heart rate {vit['heart_rate']['value']} bpm"])]
    if "temperature" in vit:
        t = vit["temperature"]
        vit_parts.append(f"temperature {_num(t['value'])} {t['unit']}")
    if "weight" in vit:
        w = vit["weight"]
        vit_parts.append(f"weight {_num(w['value'])} {w['unit']}")
    rng.shuffle(vit_parts)
    sentences = [
        rng.choice([f"{she} reports {_and(rec['symptoms'])}.", f"Presenting complaints: {_and(rec['symptoms'])}."]),
        rng.choice(["On examination, ", "Vitals: ", "Measured today: "]) + ", ".join(vit_parts) + ".",
        rng.choice([f"Assessment: {rec['diagnosis']}.", f"Working diagnosis is {rec['diagnosis']}."]),
    ]
    if rec["medications"]:
        meds = [f"{m['name']} {_num(m['dose']['value'])} {m['dose']['unit']} {m['frequency']}" for m in rec["medications"]]
        sentences.append(rng.choice(["Started ", "Prescribed ", "Plan: "]) + _and(meds) + ".")
    else:
        sentences.append("No medication was prescribed.")
    rng.shuffle(sentences)
    note = head + " " + " ".join(sentences)
    if rec["labs"]:
        note += "\nLab system export: " + json.dumps({"labs": rec["labs"]}, ensure_ascii=False)
    return note


def generate_records(n: int = 400, seed: int = 0) -> list[dict[str, Any]]:
    """Alpaca records ``{instruction, input, output}``: ``output`` is the record as JSON text
    (``json.dumps`` default separators, the form constrained decoding also writes)."""
    rng = random.Random(seed)
    used: set[str] = set()
    out = []
    for _ in range(n):
        rec = make_record(rng, used)
        out.append({"instruction": INSTRUCTION, "input": make_note(rec, rng),
                    "output": json.dumps(rec, ensure_ascii=False)})
    return out
