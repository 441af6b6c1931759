"""Regenerate the example data (deterministic): ``python examples/make_data.py``.

- ``stories.xlsx``: one row per published story: its genre, how it was written, and whether
  readers finished it (and how they rated it). Finishing depends on combinations: thrillers
  need suspense with two twists, romances dialogue with few twists.
- ``leads.csv`` and ``outcomes.xlsx``: lead features from a CRM export and, separately, the
  won/lost results from the sales team's sheet, joined on ``lead_id``.
"""

from __future__ import annotations

import csv
import math
import random
from datetime import datetime, timedelta
from pathlib import Path

from openpyxl import Workbook

HERE = Path(__file__).parent
GENRES = ["thriller", "romance", "scifi", "drama"]
OPENINGS = ["question", "suspense", "dialogue", "description"]
LENGTHS = ["short", "medium", "long"]


def story_completion(genre: str, opening: str, twists: int, length: str) -> float:
    logit = -0.6 + {"short": 0.3, "medium": 0.1, "long": -0.3}[length]
    if genre == "thriller":
        logit += (
            1.2 * (opening == "suspense")
            + 0.9 * (twists == 2)
            + 0.8 * (opening == "suspense" and twists == 2)
        )
    elif genre == "romance":
        logit += 1.0 * (opening == "dialogue") + 0.6 * (twists <= 1) - 0.7 * (twists == 3)
    elif genre == "scifi":
        logit += 0.7 * (opening == "question") + 0.3 * (length == "long")
    else:
        logit += 0.5 * (opening == "description") - 0.2 * twists
    return 1 / (1 + math.exp(-logit))


def stories(rng: random.Random, n: int = 2400) -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "stories"
    sheet.append(["Story", "Published", "Genre", "Opening", "twist_count", "length",
                  "Completed", "rating"])  # fmt: skip
    start = datetime(2026, 3, 1, 9, 0)
    for i in range(n):
        genre = rng.choice(GENRES)
        opening, twists, length = rng.choice(OPENINGS), rng.randrange(4), rng.choice(LENGTHS)
        done = rng.random() < story_completion(genre, opening, twists, length)
        rating = min(5, max(1, round(rng.gauss(3.9 if done else 2.6, 0.8))))
        sheet.append([
            f"S-{i + 1:05d}",
            start + timedelta(minutes=90 * i),
            genre,
            opening,
            twists,
            length,
            "yes" if done else "no",
            rating if rng.random() < 0.7 else None,
        ])  # fmt: skip
    # a few rows as people really type them: each is rejected with its row number and reason
    sheet.append(["S-bad-1", start, "thriller", "cliffhanger", 2, "long", "yes", 4])
    sheet.append(["S-bad-2", start, "romance", "dialogue", "three", "short", "no", None])
    sheet.append(["S-bad-3", start, "western", "question", 1, "medium", "yes", 5])
    book.save(HERE / "stories.xlsx")


def leads(rng: random.Random, n: int = 1800) -> None:
    start = datetime(2025, 9, 1, 8, 0)
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "outcomes"
    sheet.append(["lead_id", "won", "amount", "closed_at"])
    with (HERE / "leads.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["lead_id", "created_at", "industry", "employees", "channel", "offer"])
        for i in range(n):
            lead = f"L{i + 1:05d}"
            industry = rng.choice(["saas", "retail", "finance"])
            employees = int(math.exp(rng.uniform(math.log(5), math.log(5000))))
            channel, offer = (
                rng.choice(["email", "call", "linkedin"]),
                rng.choice(["discount", "trial", "demo"]),
            )
            created = start + timedelta(hours=3 * i)
            writer.writerow([lead, created.isoformat(), industry, employees, channel, offer])
            logit = -1.4 + 0.4 * (channel == "call")
            logit += 1.1 * (offer == "demo" and employees >= 200)  # demos sell to big firms
            logit += 0.9 * (offer == "trial" and industry == "saas")
            logit += 0.5 * (offer == "discount" and industry == "retail")
            if rng.random() < 0.08:
                continue  # still open: no outcome row yet
            won = rng.random() < 1 / (1 + math.exp(-logit))
            amount = round(rng.lognormvariate(8 + 0.3 * math.log10(employees), 0.5), 2)
            sheet.append([lead, "yes" if won else "no", amount if won else 0,
                          created + timedelta(days=rng.randint(3, 40))])  # fmt: skip
    sheet.append(["L99999", "yes", 1200, start])  # an outcome for a lead the CRM never had
    book.save(HERE / "outcomes.xlsx")


if __name__ == "__main__":
    stories(random.Random(7))
    leads(random.Random(11))
