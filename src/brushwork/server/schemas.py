"""The JSON the REST API takes and gives (these models also write its OpenAPI description)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Error(BaseModel):
    detail: str = Field(description="What went wrong, in one line.")


#: Error answers every endpoint may give, for the OpenAPI description.
ERRORS = {status: {"model": Error} for status in (400, 403, 404, 409, 413, 415, 422, 500, 503, 507)}
#: And those of the study's requests that carry a participant token or count against a rate.
STUDY_ERRORS = {status: {"model": Error} for status in (401, 429)}


class ModelInfo(BaseModel):
    name: str
    method: str
    kind: Literal["model", "loss-network"]
    summary: str
    source: str
    licence: str
    citation: str
    notes: str
    default: bool
    available: bool = Field(description="Its weights are on this machine; the server never downloads weights, so "
                                        "a model without them is refused with 503.")


class SampleInfo(BaseModel):
    ref: str = Field(examples=["sample:chelsea"])
    description: str
    url: str


class ImageInfo(BaseModel):
    ref: str = Field(description="Use it as content_ref or style_ref.", examples=["image:3f5a..."])
    sha256: str
    url: str
    width: int
    height: int
    name: str
    artwork: bool = Field(description="In the deception study's pool of real artworks.")


class InputInfo(BaseModel):
    ref: str
    url: str


class ResultInfo(BaseModel):
    id: int
    ref: str = Field(description="The output as an input of another stylisation.")
    url: str
    thumbnail_url: str = Field(description="A small JPEG of the output, for lists.")
    download_name: str
    width: int
    height: int
    content: InputInfo
    styles: list[InputInfo]
    model: str
    method: str
    alpha: float
    style_weights: list[float] | None
    preserve_color: str | None
    size: int = Field(description="Shorter side asked for, in pixels.")
    seconds: float = Field(description="Time the stylisation took, not counting time in the queue.")
    title: str
    created: datetime


class ResultPage(BaseModel):
    items: list[ResultInfo]
    total: int
    offset: int
    limit: int


class ResultUpdate(BaseModel):
    title: str = Field(max_length=200)


class NewParticipant(BaseModel):
    token: str = Field(description="Send it with each trial and answer as 'Authorization: Bearer TOKEN'; keep it "
                                   "secret: whoever has it answers as this participant.")
    id: str = Field(description="The participant's id in the results and the CSV: random, no personal data.")


class TrialRequest(BaseModel):
    study: Literal["preference", "deception"]
    count: int = Field(4, ge=2, le=8, description="Images in the trial, at most.")


class TrialItemInfo(BaseModel):
    position: int
    url: str


class TrialInfo(BaseModel):
    """A trial shows images only, under its own URLs: which model made which, or which image of the gallery or of
    the artworks it is, is never sent to the person answering."""

    id: str
    study: Literal["preference", "deception"]
    answered: bool
    items: list[TrialItemInfo]


class Answer(BaseModel):
    """Who answers is the participant of the request's token; an id in the body is refused, not taken."""

    model_config = ConfigDict(extra="forbid")

    picked: list[int] = Field(description="Preference: the one position chosen. Deception: the positions marked "
                                          "real (possibly none).")


class Rate(BaseModel):
    shown: int
    picked: int = Field(description="Preference: times chosen. Deception: times marked real.")
    rate: float | None = Field(description="picked / shown; null when never shown.")
    ci_low: float = Field(description="95% Wilson interval, lower end.")
    ci_high: float


class ConditionRate(Rate):
    condition: str = Field(description="Model and settings, e.g. 'microast, alpha 1'.")


class PreferenceResults(BaseModel):
    trials: int
    conditions: list[ConditionRate]


class DeceptionResults(BaseModel):
    trials: int
    stylisations: Rate = Field(description="Deception rate: stylisations marked real.")
    artworks: Rate = Field(description="Real artworks marked real: the rate to compare with.")
    conditions: list[ConditionRate]


class ParticipantAnswers(BaseModel):
    """What one participant answered: someone answering far more than the others, or always choosing one
    condition, stands out."""

    participant: str
    trials: int = Field(description="Answered trials, both studies.")
    preference_trials: int
    favourite: str | None = Field(description="The condition this participant chose most often.")
    favourite_share: float | None = Field(description="Share of their preference trials in which they chose it.")
    deception_trials: int
    stylisations_marked_real: float | None = Field(description="Share of the stylisations they were shown that "
                                                               "they marked real.")
    last_answer: datetime


class StudyResults(BaseModel):
    participants: list[ParticipantAnswers] = Field(description="Most answers first.")
    preference: PreferenceResults
    deception: DeceptionResults


class Health(BaseModel):
    status: Literal["ok"]
    workers: int
    pending: int = Field(description="Stylisations running or waiting.")
    capacity: int = Field(description="Beyond this many pending, requests are refused with 503.")
    dropped: int = Field(description="Stylisations dropped since the server started because their client closed "
                                     "the connection before they began.")
    stored_bytes: int = Field(description="Bytes of the image files stored.")
    storage_quota: int | None = Field(description="Most bytes of image files kept; beyond it, 507.")
