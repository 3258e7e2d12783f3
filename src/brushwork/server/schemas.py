"""The JSON the REST API takes and gives (these models also write its OpenAPI description)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class Error(BaseModel):
    detail: str = Field(description="What went wrong, in one line.")


#: Error answers every endpoint may give, for the OpenAPI description.
ERRORS = {status: {"model": Error} for status in (400, 404, 409, 413, 415, 422, 500, 503)}


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


class TrialRequest(BaseModel):
    study: Literal["preference", "deception"]
    count: int = Field(4, ge=2, le=8, description="Images in the trial, at most.")


class TrialItemInfo(BaseModel):
    position: int
    url: str


class TrialInfo(BaseModel):
    """A trial shows images only: which model made which is never sent to the person answering."""

    id: str
    study: Literal["preference", "deception"]
    answered: bool
    items: list[TrialItemInfo]


class Answer(BaseModel):
    picked: list[int] = Field(description="Preference: the one position chosen. Deception: the positions marked "
                                          "real (possibly none).")
    participant: str = Field("anonymous", max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
                             description="A pseudonymous id the page keeps in the browser; no personal data.")


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


class StudyResults(BaseModel):
    preference: PreferenceResults
    deception: DeceptionResults


class Health(BaseModel):
    status: Literal["ok"]
    workers: int
    pending: int = Field(description="Stylisations running or waiting.")
    capacity: int = Field(description="Beyond this many pending, requests are refused with 503.")
