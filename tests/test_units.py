"""Memory sizes and durations as people write them, and the errors for the rest."""

from __future__ import annotations

from datetime import timedelta

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.units import format_duration, format_memory, parse_duration, parse_memory


@pytest.mark.parametrize("text, megabytes", [
    (512, 512), ("512M", 512), ("512MB", 512), ("4G", 4096), ("4g", 4096), ("1.5GB", 1536),
    ("2T", 2 * 1024 * 1024), ("1024K", 1), ("1500K", 2), ("1GiB", 1024), (" 8 G ", 8192),
    ("100", 100), ("1048576B", 1), ("4Gi", 4096), ("512Mi", 512),
])
def test_memory_sizes_people_write_become_megabytes(text, megabytes):
    assert parse_memory(text) == megabytes


@pytest.mark.parametrize("bad", ["4X", "G", "", "-1G", "0", 0, -5, "1.2.3G", True, None, [4],
                                 "512i", "512iB"])
def test_bad_memory_names_the_field_and_the_accepted_forms(bad):
    with pytest.raises(ValueError, match=r"memory=.*'4G'"):
        parse_memory(bad)


@pytest.mark.parametrize(("bad", "said"), [
    (1.5, r"has no unit, and 1.5 megabytes are so little that gigabytes are likely meant: "
          r"write '1.5G'"),
    (100.5, r"is not a whole number of megabytes; give its unit, or use an int of megabytes "
            r"\(64 or more\)"),
    ("1.5", r"has no unit, and 1.5 megabytes are so little that gigabytes are likely meant: "
            r"write '1.5G'"),
    (" 0.5 ", r"has no unit, and 0.5 megabytes are so little that gigabytes are likely "
              r"meant: write '0.5G'"),
])
def test_a_fraction_of_a_megabyte_without_a_unit_is_refused_as_surely_meant_otherwise(bad, said):
    """BUG (attack review): memory=1.5 was taken as 1.5 MB (rounded up to 2),
    where its writer surely meant 1.5 GB; SGE then killed the job."""
    with pytest.raises(ValueError, match=rf"^memory=.* {said}"):
        parse_memory(bad)
    assert parse_memory(2048.0) == parse_memory("2048") == 2048  # whole: megabytes, as ever


@pytest.mark.parametrize("text, seconds", [
    (90, 90), (1.5, 1.5), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400),
    ("1h30m", 5400), ("1:30:00", 5400), ("30:00", 1800), ("2-00:00:00", 172800),
    ("1-12", 129600), ("1-02:30", 95400), ("45 min", 2700), (timedelta(minutes=2), 120),
])
def test_durations_people_write_become_seconds(text, seconds):
    assert parse_duration(text) == seconds


def test_a_bare_number_in_a_string_is_refused_as_ambiguous():
    with pytest.raises(ValueError, match=r"walltime='30' is ambiguous: write '30s' .* or '30m'"):
        parse_duration("30")


@pytest.mark.parametrize("bad", ["soon", "10x", "1:2:3:4", 0, -3, "", None, True])
def test_bad_durations_name_the_field_and_the_accepted_forms(bad):
    with pytest.raises(ValueError, match=r"timeout=.*('90s'|ambiguous|unknown time unit)"):
        parse_duration(bad, "timeout")


@pytest.mark.parametrize("typo, message", [
    ("1:70:00", "minutes must be below 60"), ("99:99", "seconds must be below 60"),
    ("99:99:99", "minutes must be below 60"), ("1:00:60", "seconds must be below 60"),
    ("2-24:00:00", "hours must be below 24"), ("1-30", "hours must be below 24"),
    ("1-02:75", "minutes must be below 60"),
])
def test_a_clock_whose_later_fields_overflow_is_refused_naming_the_field(typo, message):
    """BUG (attack, cold review): "1:70:00" and "99:99" were taken, as 2 h 10 m
    and 100 m 39 s, when they are typos."""
    with pytest.raises(ValueError, match=rf"^walltime='{typo}': {message} in a clock such as "
                                         r"'1:30:00' or '2-00:00:00'$"):
        parse_duration(typo)


def test_the_first_field_of_a_clock_may_be_large():
    assert parse_duration("90:00") == 5400
    assert parse_duration("100:00:00") == 360000
    assert parse_duration("1:59:59.5") == 7199.5


def test_the_seconds_of_a_clock_and_only_they_may_have_a_fraction():
    """BUG (found while fixing the overflow): "1:30.5" raised a TypeError
    from inside the parser instead of reading 90.5 s."""
    assert parse_duration("1:30.5") == 90.5
    assert parse_duration("1-00:00:01.25") == 86401.25
    for misplaced in ("1-2:3.5", "1-12.5"):
        with pytest.raises(ValueError, match=rf"^walltime='{misplaced}': only the seconds of a "
                                             r"clock may have a fraction, as in '1:30:00\.5'$"):
            parse_duration(misplaced)


def test_unknown_time_unit_is_named():
    with pytest.raises(ValueError, match="unknown time unit 'fortnights'"):
        parse_duration("2fortnights")


@pytest.mark.parametrize("text", ["1e9h", "1.5E2m", "2e-1s", "1e3"])
def test_a_number_with_an_exponent_is_refused_as_such_not_as_a_unit_e(text):
    """Attack review: --timeout 1e9h was refused for "unknown time unit 'e'"."""
    with pytest.raises(ValueError, match=rf"^timeout='{re.escape(text)}': a number with an "
                                         r"exponent is not taken; write it out \(a number of "):
        parse_duration(text, "timeout")


@given(st.integers(min_value=1, max_value=10**7))
def test_formatted_durations_parse_back_to_the_same_seconds(seconds):
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.integers(min_value=1, max_value=10**6))
def test_formatted_memory_parses_back_to_the_same_megabytes(megabytes):
    assert parse_memory(format_memory(megabytes)) == megabytes
