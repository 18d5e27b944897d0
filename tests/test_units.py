"""Pure units: send windows and delays, link tokens, input validation, clocks, settings."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import tidings.clock
from tidings.campaigns.windows import SendWindow, parse_days, parse_delay
from tidings.clock import FixedClock, RealClock, ScaledClock, clock_from_spec
from tidings.config import DEFAULT_CRISIS_LINE, Settings, load_settings
from tidings.errors import ConfigError, InvalidInput
from tidings.subscribers.tokens import (
    ExpiredToken,
    InvalidToken,
    Links,
    make_token,
    new_subscriber_key,
    read_token,
)
from tidings.subscribers.validation import (
    check_timezone,
    clean_name,
    mask_email,
    normalize_email,
)

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
TOKYO = ZoneInfo("Asia/Tokyo")
WEEKDAYS = SendWindow.parse("09:00-17:00", "mon-fri")
EVERY_DAY = SendWindow.parse("09:00-17:00", "all")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(tz: ZoneInfo, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=tz, fold=fold)


# ----------------------------------------------------------------------------- send windows


def test_weekday_window_contains():
    # Monday 2026-10-19 in New York (EDT, UTC-4).
    assert WEEKDAYS.contains(local(NEW_YORK, 2026, 10, 19, 9, 0), NEW_YORK)
    assert WEEKDAYS.contains(local(NEW_YORK, 2026, 10, 19, 16, 59, 59), NEW_YORK)
    assert not WEEKDAYS.contains(local(NEW_YORK, 2026, 10, 19, 17, 0), NEW_YORK)
    assert not WEEKDAYS.contains(local(NEW_YORK, 2026, 10, 19, 8, 59), NEW_YORK)
    assert not WEEKDAYS.contains(local(NEW_YORK, 2026, 10, 24, 12, 0), NEW_YORK)  # Saturday
    assert not WEEKDAYS.contains(local(NEW_YORK, 2026, 10, 25, 12, 0), NEW_YORK)  # Sunday
    # 14:00 UTC Monday is 10:00 in New York (open) but 23:00 in Tokyo (closed).
    assert WEEKDAYS.contains(utc(2026, 10, 19, 14, 0), NEW_YORK)
    assert not WEEKDAYS.contains(utc(2026, 10, 19, 14, 0), TOKYO)


def test_open_window_returns_the_same_instant():
    at = utc(2026, 10, 19, 14, 0)
    assert WEEKDAYS.next_open(at, NEW_YORK) == at


def test_friday_evening_waits_until_monday_morning_local_time():
    friday_evening = local(NEW_YORK, 2026, 10, 23, 18, 30).astimezone(UTC)
    opening = WEEKDAYS.next_open(friday_evening, NEW_YORK)
    assert opening == utc(2026, 10, 26, 13, 0)  # Monday 09:00 EDT
    assert opening.astimezone(NEW_YORK).replace(tzinfo=None) == datetime(2026, 10, 26, 9, 0)
    assert WEEKDAYS.contains(opening, NEW_YORK)


def test_before_opening_on_a_weekday_waits_until_nine_the_same_day():
    early = local(BERLIN, 2026, 10, 20, 7, 15).astimezone(UTC)
    assert WEEKDAYS.next_open(early, BERLIN) == local(BERLIN, 2026, 10, 20, 9, 0)


def test_after_closing_on_thursday_opens_friday():
    late = local(BERLIN, 2026, 10, 22, 17, 0).astimezone(UTC)
    assert WEEKDAYS.next_open(late, BERLIN) == local(BERLIN, 2026, 10, 23, 9, 0)


@pytest.mark.parametrize(
    "tz, before, opening_utc",
    [
        # Spring forward: the offset changes overnight, 09:00 is at the new offset.
        (NEW_YORK, utc(2026, 3, 8, 5, 0), utc(2026, 3, 8, 13, 0)),  # EST -> EDT
        (BERLIN, utc(2026, 3, 28, 23, 0), utc(2026, 3, 29, 7, 0)),  # CET -> CEST
        # Fall back.
        (NEW_YORK, utc(2026, 11, 1, 4, 0), utc(2026, 11, 1, 14, 0)),  # EDT -> EST
        (BERLIN, utc(2026, 10, 24, 22, 0), utc(2026, 10, 25, 8, 0)),  # CEST -> CET
    ],
)
def test_nine_oclock_on_dst_change_days(tz, before, opening_utc):
    opening = EVERY_DAY.next_open(before, tz)
    assert opening == opening_utc
    assert opening.astimezone(tz).time() == time(9, 0)
    assert EVERY_DAY.contains(opening, tz)
    assert not EVERY_DAY.contains(opening - timedelta(minutes=1), tz)


def test_window_opening_in_the_skipped_hour_opens_when_the_clock_jumps():
    window = SendWindow.parse("02:30-04:00", "all")
    # New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT; 02:30 never happens.
    opening = window.next_open(utc(2026, 3, 8, 5, 0), NEW_YORK)
    assert opening == utc(2026, 3, 8, 7, 30)  # 03:30 EDT, an hour after "02:30 EST"
    assert window.contains(opening, NEW_YORK)
    # Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST.
    opening = window.next_open(utc(2026, 3, 29, 0, 0), BERLIN)
    assert opening == utc(2026, 3, 29, 1, 30)  # 03:30 CEST
    assert window.contains(opening, BERLIN)


def test_window_opening_in_the_repeated_hour_opens_the_first_time():
    window = SendWindow.parse("01:30-03:00", "all")
    # New York, 2026-11-01: 01:00-02:00 happens twice (EDT, then EST).
    assert window.next_open(utc(2026, 11, 1, 4, 0), NEW_YORK) == utc(2026, 11, 1, 5, 30)
    # Inside the second 01:30 (EST) the window is open too.
    assert window.contains(local(NEW_YORK, 2026, 11, 1, 1, 45, fold=1), NEW_YORK)
    # Berlin, 2026-10-25: 02:00-03:00 happens twice; 01:30 CEST is 23:30 UTC the day before.
    assert window.next_open(utc(2026, 10, 24, 20, 0), BERLIN) == utc(2026, 10, 24, 23, 30)


def test_tokyo_window_has_no_dst_and_is_far_from_utc():
    friday_after_work = local(TOKYO, 2026, 10, 23, 17, 30).astimezone(UTC)
    opening = WEEKDAYS.next_open(friday_after_work, TOKYO)
    assert opening == utc(2026, 10, 26, 0, 0)  # Monday 09:00 JST is Monday 00:00 UTC
    # Sunday 23:00 UTC is already Monday 08:00 in Tokyo: one hour to wait, not a day.
    assert WEEKDAYS.next_open(utc(2026, 10, 25, 23, 0), TOKYO) == utc(2026, 10, 26, 0, 0)
    # Monday 20:00 UTC is Tuesday 05:00 in Tokyo.
    assert WEEKDAYS.next_open(utc(2026, 10, 19, 20, 0), TOKYO) == utc(2026, 10, 20, 0, 0)


@pytest.mark.parametrize("tz", [NEW_YORK, BERLIN, TOKYO], ids=str)
@pytest.mark.parametrize(
    "window",
    [WEEKDAYS, EVERY_DAY, SendWindow.parse("18:00-20:30", "sat,sun")],
    ids=["weekdays", "every-day", "weekend-evenings"],
)
def test_next_open_is_the_first_open_instant_across_dst_seasons(window, tz):
    # Around both DST changes of 2026, every 20 minutes: the answer is open, not in the
    # past, closed a minute before (unless it is `at` itself), and no later than the first
    # 20-minute mark from `at` on at which the window is open.
    step = timedelta(minutes=20)
    for start in (utc(2026, 3, 5), utc(2026, 10, 22)):
        marks = [start + step * i for i in range(14 * 72)]
        is_open = [window.contains(mark, tz) for mark in marks]
        first_open_mark: datetime | None = None
        for i in range(len(marks) - 1, -1, -1):  # backwards: the first open mark from i on
            if is_open[i]:
                first_open_mark = marks[i]
            at = marks[i]
            opening = window.next_open(at, tz)
            assert opening >= at
            assert window.contains(opening, tz), (at, opening)
            if opening != at:
                assert not window.contains(opening - timedelta(minutes=1), tz), (at, opening)
            if first_open_mark is not None:
                assert opening <= first_open_mark, (at, opening, first_open_mark)


def test_window_parse_errors():
    with pytest.raises(ValueError, match="must end after it starts"):
        SendWindow.parse("17:00-09:00", None)
    with pytest.raises(ValueError, match="HH:MM-HH:MM"):
        SendWindow.parse("9 to 5", None)
    with pytest.raises(ValueError, match="days"):
        SendWindow.parse("09:00-17:00", "weekdays")
    assert SendWindow.parse(None, None).always_open
    assert not WEEKDAYS.always_open


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("0", 0),
        (0, 0),
        ("2d", 2 * 86400),
        ("36h", 36 * 3600),
        ("1d12h", 36 * 3600),
        ("1d 12h", 36 * 3600),
        ("90m", 5400),
        ("45s", 45),
        ("2D", 2 * 86400),
        (3600, 3600),
    ],
)
def test_parse_delay(text, seconds):
    assert parse_delay(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "2", "2x", "d", "-1d", "1.5d", "two days", "2 days", -5, True, None, 1.5]
)
def test_parse_delay_rejects_bad_values(text):
    with pytest.raises(ValueError):
        parse_delay(text)


@pytest.mark.parametrize(
    "spec, days",
    [
        ("mon-fri", {0, 1, 2, 3, 4}),
        ("Mon - Fri", {0, 1, 2, 3, 4}),
        ("mon,wed,fri", {0, 2, 4}),
        (["sat", "sun"], {5, 6}),
        ("fri-mon", {4, 5, 6, 0}),
        ("sun", {6}),
        ("all", set(range(7))),
        ("mon-fri,sun", {0, 1, 2, 3, 4, 6}),
    ],
)
def test_parse_days(spec, days):
    assert parse_days(spec) == frozenset(days)


@pytest.mark.parametrize("spec", ["", "weekdays", "mon-funday", "monday", "1-5", ["mon", "xyz"]])
def test_parse_days_rejects_bad_values(spec):
    with pytest.raises(ValueError):
        parse_days(spec)


# ----------------------------------------------------------------------------- tokens

SECRET = "s3cret"
NOW = utc(2026, 10, 19, 8, 0)


@pytest.mark.parametrize("scope", ["unsubscribe", "preferences"])
def test_token_round_trip(scope):
    key = new_subscriber_key()
    token = make_token(SECRET, scope, key)
    assert read_token(SECRET, scope, token) == key
    assert key in token  # the key, never the address
    assert "@" not in token


def test_confirm_token_round_trip():
    key = new_subscriber_key()
    token = make_token(SECRET, "confirm", key, NOW)
    assert read_token(SECRET, "confirm", token, NOW + timedelta(days=1), timedelta(days=7)) == key


@pytest.mark.parametrize(
    "made_as, read_as",
    [
        ("unsubscribe", "preferences"),
        ("unsubscribe", "confirm"),
        ("preferences", "unsubscribe"),
        ("preferences", "confirm"),
        ("confirm", "unsubscribe"),
        ("confirm", "preferences"),
    ],
)
def test_a_token_only_works_for_its_scope(made_as, read_as):
    token = make_token(SECRET, made_as, new_subscriber_key(), NOW)
    with pytest.raises(InvalidToken):
        read_token(SECRET, read_as, token, NOW, timedelta(days=7))


def test_forged_and_altered_tokens_are_refused():
    key = new_subscriber_key()
    token = make_token(SECRET, "unsubscribe", key)
    other = new_subscriber_key()
    mac = token.rsplit(".", 1)[1]
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    forged = [
        f"{other}.{mac}",  # someone else's key with this MAC
        f"{key}.{flipped}",  # altered MAC
        f"{key}.{mac[:-2]}",  # truncated MAC
        make_token("another-secret", "unsubscribe", key),  # signed with another secret
        key,  # no MAC at all
        f"{key}.{mac}.extra",
        "",
        "....",
        f"{key}.",
    ]
    for bad in forged:
        with pytest.raises(InvalidToken):
            read_token(SECRET, "unsubscribe", bad)


def test_altered_confirm_stamp_is_refused():
    key = new_subscriber_key()
    token = make_token(SECRET, "confirm", key, NOW)
    _, stamp, mac = token.split(".")
    newer = format(int(NOW.timestamp()) + 30 * 86400, "x")
    assert newer != stamp
    with pytest.raises(InvalidToken):
        read_token(SECRET, "confirm", f"{key}.{newer}.{mac}", NOW, timedelta(days=7))


def test_confirm_token_expires_after_max_age():
    key = new_subscriber_key()
    token = make_token(SECRET, "confirm", key, NOW)
    max_age = timedelta(days=7)
    assert read_token(SECRET, "confirm", token, NOW + max_age, max_age) == key
    with pytest.raises(ExpiredToken) as caught:
        read_token(SECRET, "confirm", token, NOW + max_age + timedelta(seconds=1), max_age)
    assert caught.value.subscriber_key == key
    assert isinstance(caught.value, InvalidToken)


def test_unsubscribe_tokens_never_expire():
    key = new_subscriber_key()
    token = make_token(SECRET, "unsubscribe", key)
    years_later = NOW + timedelta(days=3650)
    assert read_token(SECRET, "unsubscribe", token, years_later, timedelta(days=7)) == key


def test_subscriber_keys_carry_at_least_128_random_bits():
    keys = [new_subscriber_key() for _ in range(2000)]
    assert len(set(keys)) == len(keys)
    for key in keys[:50]:
        raw = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))
        assert len(raw) * 8 >= 128
        assert "." not in key
    # Every position varies: no fixed prefix or structure eats into the randomness.
    for position in range(len(keys[0]) - 1):
        assert len({k[position] for k in keys}) > 32


def test_make_token_refuses_unknown_scopes_and_confirm_without_time():
    with pytest.raises(ValueError):
        make_token(SECRET, "delete", "k")
    with pytest.raises(ValueError):
        make_token(SECRET, "confirm", "k")


def test_links_are_under_the_base_url_and_read_back():
    links = Links("https://news.example.org", SECRET)
    key = new_subscriber_key()
    for url, scope in (
        (links.unsubscribe(key), "unsubscribe"),
        (links.preferences(key), "preferences"),
        (links.confirm(key, NOW), "confirm"),
    ):
        assert url.startswith(f"https://news.example.org/{scope}/")
        token = url.rsplit("/", 1)[1]
        assert read_token(SECRET, scope, token, NOW, timedelta(days=7)) == key


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "raw, normalized",
    [
        ("ann@example.org", "ann@example.org"),
        ("  Ann.Lee@Example.ORG ", "ann.lee@example.org"),
        ("ANN+news@EXAMPLE.org", "ann+news@example.org"),
        ("ann@bücher.example", "ann@xn--bcher-kva.example"),
        ("ann@BÜCHER.example", "ann@xn--bcher-kva.example"),
    ],
)
def test_normalize_email(raw, normalized):
    assert normalize_email(raw) == normalized


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "not-an-email",
        "ann@",
        "@example.org",
        "ann@@example.org",
        "ann@example",
        "ann lee@example.org",
        "ann@example.org\r\nBcc: evil@example.org",
        "ann@example.org\nBcc: evil@example.org",
        "ann@exa\rmple.org",
        "ann@example.org\x00",
    ],
)
def test_normalize_email_refuses_invalid_addresses_naming_the_field(raw):
    with pytest.raises(InvalidInput) as caught:
        normalize_email(raw, field="contact_email")
    assert caught.value.field == "contact_email"
    assert str(caught.value).startswith("contact_email: ")


def test_normalize_email_names_line_breaks():
    with pytest.raises(InvalidInput, match="line breaks"):
        normalize_email("ann@example.org\r\nBcc: evil@example.org")


@pytest.mark.parametrize(
    "raw, name",
    [
        ("America/New_York", "America/New_York"),
        (" Europe/Berlin ", "Europe/Berlin"),
        ("Asia/Tokyo", "Asia/Tokyo"),
        ("UTC", "UTC"),
        ("", "UTC"),
        (None, "UTC"),
    ],
)
def test_check_timezone_accepts_iana_names(raw, name):
    assert check_timezone(raw) == name


@pytest.mark.parametrize(
    "raw", ["Mars/Olympus_Mons", "America/Nowhere", "../../etc/passwd", "PDT", "+02:00"]
)
def test_check_timezone_refuses_unknown_names(raw):
    with pytest.raises(InvalidInput) as caught:
        check_timezone(raw, field="tz")
    assert caught.value.field == "tz"


def test_check_timezone_hints_at_region_names_for_abbreviations():
    with pytest.raises(InvalidInput, match="America/New_York"):
        check_timezone("PDT")


def test_clean_name():
    assert clean_name("  Ann   Lee  ") == "Ann Lee"
    assert clean_name(None) == ""
    assert clean_name("Zoë Ünal") == "Zoë Ünal"
    assert clean_name("<b>Ann</b> & Co") == "<b>Ann</b> & Co"  # escaped when rendered
    assert clean_name("A" * 200) == "A" * 200


@pytest.mark.parametrize(
    "raw",
    ["Ann\r\nBcc: evil@example.org", "Ann\nLee", "Ann\rLee", "Ann\tLee", "Ann\u2028Lee", "A\x00"],
)
def test_clean_name_refuses_line_breaks_and_control_characters(raw):
    with pytest.raises(InvalidInput) as caught:
        clean_name(raw, field="full_name")
    assert caught.value.field == "full_name"


def test_clean_name_refuses_too_long_names():
    with pytest.raises(InvalidInput, match="200") as caught:
        clean_name("A" * 201)
    assert caught.value.field == "name"


@pytest.mark.parametrize(
    "address, masked",
    [
        ("ann@example.org", "a**@example.org"),
        ("zoe.unal@mail.example.org", "z**@mail.example.org"),
        ("a@b.org", "a**@b.org"),
        ("no-at-sign", "***"),
    ],
)
def test_mask_email(address, masked):
    assert mask_email(address) == masked


# ----------------------------------------------------------------------------- clocks


def test_fixed_clock_stands_still_until_moved():
    clock = FixedClock(datetime(2026, 10, 19, 8, 0))  # naive: taken as UTC
    assert clock.now() == utc(2026, 10, 19, 8, 0)
    assert clock.now() == clock.now()
    assert clock.advance(hours=2, minutes=30) == utc(2026, 10, 19, 10, 30)
    assert clock.advance(timedelta(days=1)) == utc(2026, 10, 20, 10, 30)
    assert clock.now() == utc(2026, 10, 20, 10, 30)
    clock.set(datetime(2026, 10, 19, 12, 0, tzinfo=timezone(timedelta(hours=2))))
    assert clock.now() == utc(2026, 10, 19, 10, 0)
    assert clock.now().tzinfo == UTC
    assert clock.span(90) == timedelta(seconds=90)


def test_scaled_clock_runs_factor_times_faster(monkeypatch):
    real = [1000.0]
    monkeypatch.setattr(tidings.clock.time, "monotonic", lambda: real[0])
    start = utc(2026, 10, 19, 8, 0)
    clock = ScaledClock(start, 3600)  # one real second is one simulated hour
    assert clock.now() == start
    real[0] += 2.5
    assert clock.now() == start + timedelta(hours=2.5)
    real[0] += 24 * 3.5
    assert clock.now() == start + timedelta(hours=2.5 + 84)
    assert clock.span(2) == timedelta(hours=2)
    assert clock.real_seconds_until(clock.now() + timedelta(hours=10)) == pytest.approx(10)
    assert clock.real_seconds_until(start) == 0.0


def test_scaled_clock_refuses_non_positive_factors():
    for factor in (0, -1):
        with pytest.raises(ValueError):
            ScaledClock(NOW, factor)


def test_real_clock_is_aware_utc():
    before = datetime.now(UTC)
    now = RealClock().now()
    assert now.tzinfo == UTC
    assert before <= now <= datetime.now(UTC)


def test_clock_from_spec(monkeypatch):
    assert isinstance(clock_from_spec(None), RealClock)
    assert isinstance(clock_from_spec(""), RealClock)

    fixed = clock_from_spec("fixed:2026-10-19T10:00:00+02:00")
    assert isinstance(fixed, FixedClock)
    assert fixed.now() == utc(2026, 10, 19, 8, 0)
    assert clock_from_spec("fixed:2026-10-19T08:00").now() == utc(2026, 10, 19, 8, 0)

    monkeypatch.setattr(tidings.clock.time, "monotonic", lambda: 50.0)
    scaled = clock_from_spec("scaled:2026-10-19T08:00:00+00:00:720")
    assert isinstance(scaled, ScaledClock)
    assert scaled.start == utc(2026, 10, 19, 8, 0)
    assert scaled.factor == 720
    assert scaled.now() == utc(2026, 10, 19, 8, 0)
    scaled_z = clock_from_spec("scaled:2026-10-19T08:00:00Z:60")
    assert isinstance(scaled_z, ScaledClock)
    assert (scaled_z.start, scaled_z.factor) == (utc(2026, 10, 19, 8, 0), 60)


@pytest.mark.parametrize(
    "spec",
    [
        "fixed:yesterday",
        "fixed:",
        "scaled:2026-10-19T08:00:00+00:00:fast",
        "scaled:2026-10-19T08:00:00+00:00:0",
        "scaled:2026-10-19T08:00:00+00:00:-5",
        "scaled:soon:60",
        "warp:2026-10-19T08:00:00",
        "2026-10-19T08:00:00",
    ],
)
def test_clock_from_spec_refuses_bad_specs(spec):
    with pytest.raises(ConfigError, match="TIDINGS_CLOCK"):
        clock_from_spec(spec)


# ----------------------------------------------------------------------------- settings


def test_load_settings_from_environment():
    settings = load_settings(
        {
            "TIDINGS_DATABASE_URL": "postgresql+psycopg://db.example.org/tidings",
            "TIDINGS_SMTP_URL": "smtp://mx.example.org:2525",
            "TIDINGS_SMTP_POOL_SIZE": "8",
            "TIDINGS_TICK_SECONDS": "0.5",
            "TIDINGS_BASE_URL": "https://news.example.org/",
            "TIDINGS_SECRET_KEY": "k",
            "TIDINGS_REPLY_TO": "",
            "UNRELATED": "ignored",
        }
    )
    assert settings.database_url == "postgresql+psycopg://db.example.org/tidings"
    assert settings.smtp_pool_size == 8 and isinstance(settings.smtp_pool_size, int)
    assert settings.tick_seconds == 0.5
    assert settings.public_base_url == "https://news.example.org"
    assert settings.secret_key == "k"
    assert settings.reply_to is None
    assert (settings.smtp.host, settings.smtp.port) == ("mx.example.org", 2525)
    assert settings.crisis_line == DEFAULT_CRISIS_LINE  # defaults for what is not set
    assert settings.batch_size == Settings().batch_size


def test_load_settings_from_a_toml_file_and_the_environment_wins(tmp_path):
    config = tmp_path / "tidings.toml"
    config.write_text(
        'database_url = "sqlite:///from-file.db"\n'
        'from_address = "file@example.org"\n'
        "smtp_pool_size = 3\n"
        "tick_seconds = 2\n"
        'postal_address = "1 File Road"\n',
        encoding="utf-8",
    )
    from_file = load_settings({}, config_file=config)
    assert from_file.database_url == "sqlite:///from-file.db"
    assert from_file.smtp_pool_size == 3
    assert from_file.tick_seconds == 2.0 and isinstance(from_file.tick_seconds, float)
    assert from_file.postal_address == "1 File Road"

    both = load_settings(
        {
            "TIDINGS_CONFIG": str(config),
            "TIDINGS_FROM_ADDRESS": "env@example.org",
            "TIDINGS_SMTP_POOL_SIZE": "6",
        }
    )
    assert both.from_address == "env@example.org"
    assert both.smtp_pool_size == 6
    assert both.database_url == "sqlite:///from-file.db"  # not in the env: the file's value
    assert both.postal_address == "1 File Road"


def test_unknown_keys_in_the_toml_file_name_the_key(tmp_path):
    config = tmp_path / "tidings.toml"
    config.write_text('database_url = "sqlite:///x.db"\nsmtp_pool = 3\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="smtp_pool"):
        load_settings({}, config_file=config)


def test_missing_or_broken_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="TIDINGS_CONFIG"):
        load_settings({"TIDINGS_CONFIG": str(tmp_path / "missing.toml")})
    broken = tmp_path / "broken.toml"
    broken.write_text("database_url = \n", encoding="utf-8")
    with pytest.raises(ConfigError, match="TIDINGS_CONFIG"):
        load_settings({}, config_file=broken)


@pytest.mark.parametrize(
    "env, setting",
    [
        ({"TIDINGS_BATCH_SIZE": "lots"}, "TIDINGS_BATCH_SIZE"),
        ({"TIDINGS_SMTP_POOL_SIZE": "2.5"}, "TIDINGS_SMTP_POOL_SIZE"),
        ({"TIDINGS_LEASE_SECONDS": "five minutes"}, "TIDINGS_LEASE_SECONDS"),
        ({"TIDINGS_SMTP_POOL_SIZE": "0"}, "TIDINGS_SMTP_POOL_SIZE"),
        ({"TIDINGS_TRANSPORT": "pigeon"}, "TIDINGS_TRANSPORT"),
        ({"TIDINGS_BASE_URL": "news.example.org"}, "TIDINGS_BASE_URL"),
        ({"TIDINGS_SMTP_URL": "mx.example.org:25"}, "TIDINGS_SMTP_URL"),
    ],
)
def test_bad_environment_values_name_the_setting(env, setting):
    with pytest.raises(ConfigError, match=setting):
        load_settings(env)


@pytest.mark.parametrize(
    "line, setting",
    [
        ('smtp_pool_size = "four"', "TIDINGS_SMTP_POOL_SIZE"),
        ('tick_seconds = "fast"', "TIDINGS_TICK_SECONDS"),
        ("batch_size = 2.5", "TIDINGS_BATCH_SIZE"),
        ("base_url = 8000", "TIDINGS_BASE_URL"),
        ("from_name = 42", "TIDINGS_FROM_NAME"),
    ],
)
def test_bad_types_in_the_toml_file_name_the_setting(tmp_path, line, setting):
    config = tmp_path / "tidings.toml"
    config.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=setting):
        load_settings({}, config_file=Path(config))
