"""The cultures CultureSPA aligns to: ISO-3 code, adjective, article and continent.

The paper uses 18 cultures (``PAPER_CULTURES``); MEX exists in the WVS answer shares and is loadable, but is not part of
``all``. Culture sets (``all``, one per continent) are named here so configs and code agree on membership.
"""

from __future__ import annotations

from dataclasses import dataclass

from culturespa.errors import CultureSPAError

_U_SAID_YOU = ("Uk", "Ug", "Ur")  # Ukrainian, Ugandan, Uruguayan: the U sounds like "you", so "a", not "an"


@dataclass(frozen=True)
class Culture:
    code: str
    adjective: str
    country: str
    continent: str

    @property
    def article(self) -> str:
        """Indefinite article for the adjective by its first sound ("an American", "a Chinese", "a Ukrainian")."""
        if self.adjective.startswith(_U_SAID_YOU):
            return "a"
        return "an" if self.adjective[0].lower() in "aeiou" else "a"

    @property
    def person(self) -> str:
        """Natural phrase for a respondent of this culture, e.g. "an American"."""
        return f"{self.article} {self.adjective}"


_ROWS = [
    ("USA", "American", "the United States", "America"),
    ("CAN", "Canadian", "Canada", "America"),
    ("BOL", "Bolivian", "Bolivia", "America"),
    ("BRA", "Brazilian", "Brazil", "America"),
    ("GBR", "British", "Great Britain", "Europe"),
    ("NLD", "Dutch", "the Netherlands", "Europe"),
    ("DEU", "German", "Germany", "Europe"),
    ("UKR", "Ukrainian", "Ukraine", "Europe"),
    ("CHN", "Chinese", "China", "Asia"),
    ("RUS", "Russian", "Russia", "Asia"),
    ("IND", "Indian", "India", "Asia"),
    ("THA", "Thai", "Thailand", "Asia"),
    ("KEN", "Kenyan", "Kenya", "Africa"),
    ("NGA", "Nigerian", "Nigeria", "Africa"),
    ("ETH", "Ethiopian", "Ethiopia", "Africa"),
    ("ZWE", "Zimbabwean", "Zimbabwe", "Africa"),
    ("AUS", "Australian", "Australia", "Oceania"),
    ("NZL", "New Zealand", "New Zealand", "Oceania"),
    ("MEX", "Mexican", "Mexico", "America"),
]
CULTURES: dict[str, Culture] = {row[0]: Culture(*row) for row in _ROWS}
PAPER_CULTURES: tuple[str, ...] = tuple(row[0] for row in _ROWS if row[0] != "MEX")
CONTINENTS: tuple[str, ...] = ("America", "Europe", "Asia", "Africa", "Oceania")
CULTURE_SETS: dict[str, tuple[str, ...]] = {"all": PAPER_CULTURES} | {
    cont.lower(): tuple(c for c in PAPER_CULTURES if CULTURES[c].continent == cont) for cont in CONTINENTS
}


def get_culture(code: str) -> Culture:
    """Look a culture up by ISO-3 code; an unknown code is a user error that lists the valid ones."""
    try:
        return CULTURES[code]
    except KeyError:
        raise CultureSPAError(f"unknown culture {code!r}; valid codes: {', '.join(CULTURES)}") from None


def resolve_cultures(selection: object) -> list[str]:
    """Turn a config value into an ordered, duplicate-free list of culture codes.

    Accepts a set name (``all``, ``asia``…), a code, a list of either, or a mapping whose keys are codes (what the
    ``cultures`` config group composes to when several options are selected, e.g. ``cultures=[USA,CHN]``).
    """
    if selection is None:
        raise CultureSPAError("cultures: no culture selected")
    if isinstance(selection, str):
        items: list[str] = [selection]
    elif hasattr(selection, "keys"):
        items = [str(k) for k in selection.keys()]  # type: ignore[union-attr]
    else:
        items = [str(x) for x in selection]  # type: ignore[union-attr]
    codes: list[str] = []
    for item in items:
        key = item.strip()
        expanded = CULTURE_SETS.get(key.lower(), (key.upper(),))
        for code in expanded:
            get_culture(code)
            if code not in codes:
                codes.append(code)
    if not codes:
        raise CultureSPAError("cultures: no culture selected")
    return codes
