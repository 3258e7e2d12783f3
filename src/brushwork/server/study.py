"""The subjective study of seed 001: preference rate and deception rate, with 95% Wilson intervals.

*Preference*: a person sees several stylisations of one content with the same style(s), made by different
models or settings, and picks the most appealing. Preference rate of a condition = times chosen / times shown.

*Deception*: a person sees real artworks mixed with stylisations and marks those they think are real.
Deception rate = share of stylisations marked real; the share of real artworks marked real is the baseline.

Only answered trials count: a trial someone looked at and left says nothing about the images in it.

Blind: a participant gets a token from the server, and each trial is given to one participant, who alone may
answer it, once. Its images are served under the trial's own URLs as fresh copies (one size, JPEG, faint random
noise, no metadata), so that nothing in a trial can be looked up in the gallery to learn which model made which.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import random
import secrets
from collections import Counter, defaultdict

import numpy as np
from fastapi import HTTPException
from PIL import Image
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..images import resize
from .db import Participant, Result, StoredImage, Trial, TrialItem, utcnow
from .storage import encode

STUDIES = ("preference", "deception")
#: z for a two-sided 95% interval.
Z95 = 1.959963984540054
#: Shorter side of a trial's images, at most: every image of a trial is shown at one size.
TRIAL_IMAGE_SIZE = 512
#: Largest change of a pixel value by the noise of a trial's image copies.
NOISE = 2


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion: unlike the normal approximation it stays inside [0, 1] and
    is usable for small counts and for rates near 0 or 1. No trials: the whole of [0, 1]."""
    if trials == 0:
        return 0.0, 1.0
    rate = successes / trials
    denominator = 1 + z * z / trials
    centre = (rate + z * z / (2 * trials)) / denominator
    half_width = z * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half_width), min(1.0, centre + half_width)


def rate(successes: int, trials: int) -> dict:
    low, high = wilson_interval(successes, trials)
    return {"shown": trials, "picked": successes, "rate": successes / trials if trials else None,
            "ci_low": low, "ci_high": high}


def condition_of(result: Result) -> str:
    """What a study compares: the model and the settings that change the look (not the size)."""
    label = f"{result.model}, alpha {result.alpha:g}"
    return label + (f", colour {result.preserve_color}" if result.preserve_color else "")


def _token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_participant(session: Session) -> tuple[Participant, str]:
    """A new participant and its token (which only the sha256 of is stored)."""
    token = secrets.token_urlsafe(32)
    participant = Participant(id=secrets.token_hex(6), token_sha256=_token_sha256(token))
    session.add(participant)
    session.commit()
    return participant, token


def participant_of(session: Session, token: str) -> Participant | None:
    return session.scalar(select(Participant).where(Participant.token_sha256 == _token_sha256(token)))


def new_trial(session: Session, study: str, count: int, rng: random.Random, participant: Participant) -> Trial:
    """A trial of ``count`` images at most, in random order, for ``participant`` alone; 409 when the gallery has
    too little for one."""
    if study == "preference":
        items = _preference_items(session, count, rng)
    else:
        items = _deception_items(session, count, rng)
    rng.shuffle(items)
    for position, item in enumerate(items):
        item.position = position
    trial = Trial(id=secrets.token_hex(16), study=study, participant=participant.id, items=items)
    session.add(trial)
    session.commit()
    return trial


def _stylisation(result: Result) -> TrialItem:
    return TrialItem(image_sha256=result.image_sha256, result_id=result.id, real=False, condition=condition_of(result))


def _preference_items(session: Session, count: int, rng: random.Random) -> list[TrialItem]:
    # Same content and same style(s): only the model and settings differ between the images.
    groups: dict[tuple, dict[str, list[Result]]] = defaultdict(lambda: defaultdict(list))
    for result in session.scalars(select(Result)):
        groups[(result.content, tuple(result.styles))][condition_of(result)].append(result)
    candidates = [conditions for conditions in groups.values() if len(conditions) >= 2]
    if not candidates:
        raise HTTPException(409, "a preference trial needs at least two stylisations of the same content and "
                                 "style made with different models or settings; make some in the Studio")
    conditions = rng.choice(candidates)
    chosen = rng.sample(sorted(conditions), min(count, len(conditions)))
    return [_stylisation(rng.choice(conditions[name])) for name in chosen]


def _deception_items(session: Session, count: int, rng: random.Random) -> list[TrialItem]:
    results = list(session.scalars(select(Result)))
    artworks = list(session.scalars(select(StoredImage).where(StoredImage.artwork)))
    if not results or not artworks:
        raise HTTPException(409, "a deception trial needs at least one stylisation and one real artwork; upload a "
                                 "painting as a style in the Studio (or add artworks to the study)")
    unique = list({r.image_sha256: r for r in results}.values())
    fakes = rng.sample(unique, min(len(unique), max(1, count - count // 2)))
    # A stylisation next to its own style image is too easy to tell apart: prefer other artworks.
    used = {ref.removeprefix("image:") for r in fakes for ref in r.styles}
    others = [a for a in artworks if a.sha256 not in used]
    pool = others if others else artworks
    reals = rng.sample(pool, min(len(pool), max(1, count - len(fakes))))
    return [_stylisation(r) for r in fakes] + [TrialItem(image_sha256=a.sha256, real=True) for a in reals]


def check_owner(trial: Trial, participant: Participant) -> None:
    if trial.participant != participant.id:
        raise HTTPException(403, "this trial was given to another participant; ask for a trial of your own")


def answer(session: Session, trial: Trial, picked: list[int], participant: Participant) -> None:
    """Record ``participant``'s answer: the chosen position (preference) or the positions marked real (deception).

    Of answers sent at the same time, the database keeps the first: each sets the trial's answer only where it
    has none, and those that find one already there get 409.
    """
    check_owner(trial, participant)
    positions = {item.position for item in trial.items}
    unknown = sorted(set(picked) - positions)
    if unknown:
        raise HTTPException(422, f"no image at position(s) {unknown}; this trial has {len(positions)}")
    if trial.study == "preference" and len(set(picked)) != 1:
        raise HTTPException(422, "pick exactly one image in a preference trial")
    recorded = session.execute(update(Trial).where(Trial.id == trial.id, Trial.answered.is_(None))
                               .values(answered=utcnow()))
    if recorded.rowcount != 1:
        session.rollback()
        raise HTTPException(409, "this trial has been answered already")
    for item in trial.items:
        item.picked = item.position in picked
    session.commit()


def trial_image_side(trial: Trial) -> int:
    """The shorter side every image of ``trial`` is shown at: the smallest of theirs, at most TRIAL_IMAGE_SIZE."""
    return min(TRIAL_IMAGE_SIZE, *(min(item.image.width, item.image.height) for item in trial.items))


def blind_copy(image: Image.Image, shorter_side: int) -> bytes:
    """An image of a trial as the participant gets it: at the trial's one size, with faint random noise, as a new
    JPEG without metadata. Its format, size and metadata tell neither which upload or stylisation it is nor
    whether it is a real artwork, and neither its bytes nor its pixels equal those of a file the gallery serves,
    so that they cannot be looked up there (new noise each time: no copy equals another either)."""
    pixels = np.asarray(resize(image, shorter_side), dtype=np.int16)
    noise = np.random.default_rng().integers(-NOISE, NOISE + 1, size=pixels.shape, dtype=np.int16)
    return encode(Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8)), "jpg")


def _answered_items(session: Session, study: str):
    return session.execute(
        select(Trial, TrialItem).join(TrialItem).where(Trial.study == study, Trial.answered.is_not(None))
        .order_by(Trial.answered, TrialItem.position)
    ).all()


def results(session: Session) -> dict:
    """Rates per condition with their 95% Wilson intervals, the number of answered trials, and what each
    participant answered."""
    preference: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    trials = defaultdict(set)
    for trial, item in _answered_items(session, "preference"):
        trials["preference"].add(trial.id)
        preference[item.condition][0] += item.picked
        preference[item.condition][1] += 1
    deception: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    stylisations, artworks = [0, 0], [0, 0]
    for trial, item in _answered_items(session, "deception"):
        trials["deception"].add(trial.id)
        counts = artworks if item.real else stylisations
        counts[0] += item.picked
        counts[1] += 1
        if not item.real:
            deception[item.condition][0] += item.picked
            deception[item.condition][1] += 1
    return {
        "participants": _per_participant(session),
        "preference": {
            "trials": len(trials["preference"]),
            "conditions": [{"condition": name, **rate(*counts)} for name, counts in sorted(preference.items())],
        },
        "deception": {
            "trials": len(trials["deception"]),
            "stylisations": rate(*stylisations),
            "artworks": rate(*artworks),
            "conditions": [{"condition": name, **rate(*counts)} for name, counts in sorted(deception.items())],
        },
    }


def _per_participant(session: Session) -> list[dict]:
    """What each participant answered, most answers first: one person answering far more trials than the others,
    or always choosing the same condition, stands out."""
    people: dict[str, dict] = defaultdict(lambda: {"preference": set(), "deception": set(), "chosen": Counter(),
                                                   "stylisations": [0, 0], "last": None})
    for study in STUDIES:
        for trial, item in _answered_items(session, study):
            person = people[trial.participant or ""]
            person[study].add(trial.id)
            person["last"] = max(person["last"] or trial.answered, trial.answered)
            if study == "preference" and item.picked:
                person["chosen"][item.condition] += 1
            elif study == "deception" and not item.real:
                person["stylisations"][0] += item.picked
                person["stylisations"][1] += 1
    rows = []
    for participant, person in people.items():
        favourite, times = person["chosen"].most_common(1)[0] if person["chosen"] else (None, 0)
        preference, deception = len(person["preference"]), len(person["deception"])
        marked, shown = person["stylisations"]
        rows.append({"participant": participant, "trials": preference + deception,
                     "preference_trials": preference, "favourite": favourite,
                     "favourite_share": times / preference if preference else None,
                     "deception_trials": deception, "stylisations_marked_real": marked / shown if shown else None,
                     "last_answer": person["last"]})
    return sorted(rows, key=lambda row: (-row["trials"], row["participant"]))


CSV_COLUMNS = ("trial", "study", "participant", "shown", "answered", "position", "real", "condition",
               "result_id", "image_sha256", "picked")


def answers_csv(session: Session) -> str:
    """Every answered image, one row each, for analysis elsewhere."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for study in STUDIES:
        for trial, item in _answered_items(session, study):
            writer.writerow([trial.id, trial.study, trial.participant, trial.created.isoformat(),
                             trial.answered.isoformat(), item.position, int(item.real), item.condition,
                             item.result_id if item.result_id is not None else "", item.image_sha256,
                             int(item.picked)])
    return buffer.getvalue()
