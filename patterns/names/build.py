#!/usr/bin/env python3
"""Rebuilds first.txt and last.txt: the PERSON gazetteer of src/scanner/names.rs.

The lists are the given names and surnames of Faker's person providers (MIT licence,
https://github.com/joke2k/faker) for the Latin-script locales below, lower-cased, one per line,
sorted. Reproduce with:

    python3 -m venv /tmp/fk && /tmp/fk/bin/pip install faker==37.1.0
    /tmp/fk/bin/python patterns/names/build.py patterns/names/first.txt patterns/names/last.txt
"""
import importlib
import re
import sys
import unicodedata

LOCALES = [
    "en_US", "en_GB", "en_IE", "en_IN", "en_NZ", "de_DE", "de_AT", "de_CH", "fr_FR", "fr_CA",
    "fr_CH", "es_ES", "es_MX", "es_AR", "es_CO", "es_CL", "it_IT", "pt_BR", "pt_PT", "nl_NL",
    "nl_BE", "pl_PL", "cs_CZ", "sk_SK", "sv_SE", "da_DK", "no_NO", "fi_FI", "hr_HR", "sl_SI",
    "hu_HU", "ro_RO", "tr_TR", "et_EE", "lt_LT", "lv_LV", "ga_IE", "id_ID", "hi_IN", "ta_IN",
    "tw_GH", "yo_NG", "zu_ZA", "sw", "az_AZ", "uz_UZ", "vi_VN",
]
FIRST = ["first_names", "first_names_male", "first_names_female", "first_names_nonbinary"]
LAST = ["last_names", "last_names_male", "last_names_female"]
WORD = re.compile(r"^[^\W\d_][\w'’-]*$")


def names(obj):
    if isinstance(obj, property):
        return []
    if isinstance(obj, dict):
        return list(obj.keys())
    return list(obj or ())


def collect(provider, attrs, into):
    for attr in attrs:
        for name in names(getattr(provider, attr, ())):
            for part in str(name).split():
                part = unicodedata.normalize("NFC", part).strip()
                upper_ascii = all(c.isascii() and c.isupper() for c in part)
                if WORD.match(part) and len(part) >= 2 and part[0].isupper() and not upper_ascii:
                    into.add(part.lower())


def main():
    first, last = set(), set()
    for loc in LOCALES:
        provider = importlib.import_module(f"faker.providers.person.{loc}").Provider
        collect(provider, FIRST, first)
        collect(provider, LAST, last)
    with open(sys.argv[1], "w", encoding="utf-8") as f:
        f.write("\n".join(sorted(first)) + "\n")
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        f.write("\n".join(sorted(last)) + "\n")
    print(f"{len(first)} given names, {len(last)} surnames", file=sys.stderr)


if __name__ == "__main__":
    main()
