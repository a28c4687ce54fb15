"""Stand-in for printmail (filled in by its owner; see __init__.py)."""

from pathlib import Path

from fastapi import APIRouter


def router(directory: Path, secrets: dict[str, str]) -> APIRouter:
    return APIRouter()
