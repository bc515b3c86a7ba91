"""Country -> continent table, country normalization and --continent-map files."""

import json

import pytest

from megatron_meta.errors import DataError
from megatron_meta.metadata.regions import ISO_CONTINENTS, NOW_CONTINENTS, RegionTable, slug


def test_now_mapping_is_the_papers():
    expected = {
        "Asia": {"bd", "hk", "in", "lk", "my", "ph", "pk", "sg"},
        "America": {"ca", "jm", "us"},
        "Europe": {"gb", "ie"},
        "Africa": {"gh", "ke", "ng", "za", "tz"},
    }
    got = {}
    for code, continent in NOW_CONTINENTS.items():
        got.setdefault(continent, set()).add(code)
    assert got == expected
    assert "au" not in NOW_CONTINENTS and "nz" not in NOW_CONTINENTS


def test_iso_table_covers_every_country_and_agrees_with_now():
    assert len(ISO_CONTINENTS) == 249
    assert set(ISO_CONTINENTS.values()) == {"Africa", "America", "Asia", "Europe", "Oceania", "Antarctica"}
    assert all(len(code) == 2 and code.islower() for code in ISO_CONTINENTS)
    for code, continent in NOW_CONTINENTS.items():
        assert ISO_CONTINENTS[code] == continent
    assert ISO_CONTINENTS["au"] == "Oceania"
    assert ISO_CONTINENTS["br"] == "America"
    assert ISO_CONTINENTS["ru"] == "Europe"
    assert ISO_CONTINENTS["aq"] == "Antarctica"


@pytest.mark.parametrize(
    "value, code",
    [
        ("USA", "us"), ("United States", "us"), ("U.S.", "us"), ("us", "us"), ("US", "us"),
        ("United States of America", "us"), ("U.K.", "gb"), ("UK", "gb"), ("uk", "gb"),
        ("Britain", "gb"), ("United Kingdom", "gb"), ("GB", "gb"), ("NG", "ng"), ("Nigeria", "ng"),
        ("  nigeria ", "ng"), ("The Gambia", "gm"), ("Hong Kong", "hk"), ("South Korea", "kr"),
        ("Côte d'Ivoire", "ci"), ("IRL", "ie"), ("Trinidad & Tobago", "tt"),
    ],
)
def test_normalize_country(value, code):
    assert RegionTable.default().normalize_country(value) == code


@pytest.mark.parametrize("value", ["", "Atlantis", "xx", "U.S.S.R.", None, 42])
def test_normalize_unknown_is_none(value):
    assert RegionTable.default().normalize_country(value) is None


def test_continent_of():
    table = RegionTable.default()
    assert table.continent_of("ng") == "Africa"
    assert table.continent_of("au") == "Oceania"
    assert table.continent_of("zz") is None
    assert table.explicit == frozenset()


@pytest.mark.parametrize(
    "region, expected",
    [("North America", "north_america"), ("Africa", "africa"), ("ng", "ng"), (" Asia/Pacific ", "asia_pacific")],
)
def test_slug(region, expected):
    assert slug(region) == expected


def test_continent_map_json_overrides_default(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"us": "North America", "Mexico": "North America", "xk": "Europe"}))
    table = RegionTable.from_file(str(path))
    assert table.continent_of("us") == "North America"
    assert table.continent_of("mx") == "North America"
    assert table.continent_of("xk") == "Europe"  # a new code the ISO list lacks
    assert table.normalize_country("XK") == "xk"
    assert table.continent_of("ng") == "Africa"  # untouched entries keep the default
    assert table.explicit == {"us", "mx", "xk"}


def test_continent_map_tsv_and_csv(tmp_path):
    tsv = tmp_path / "map.tsv"
    tsv.write_text("country\tcontinent\n# comment\n\nau\tOceania\nNZ\tOceania\nbr\tSouth America\n")
    table = RegionTable.from_file(str(tsv))
    assert (table.continent_of("au"), table.continent_of("nz"), table.continent_of("br")) == (
        "Oceania", "Oceania", "South America")
    csv_path = tmp_path / "map.csv"
    csv_path.write_text("ng,West Africa\n\"Kenya\",East Africa\n")
    table = RegionTable.from_file(str(csv_path))
    assert table.continent_of("ng") == "West Africa"
    assert table.continent_of("ke") == "East Africa"


@pytest.mark.parametrize(
    "content, where",
    [
        ("us\tAmerica\nthis line has no continent\n", ":2"),
        ("us\tAmerica\nng\tAfrica\textra\n", ":2"),
        ("us\tAmerica\n\nNarnia\tEurope\n", ":3"),
        ("us\t\n", ":1"),
    ],
)
def test_continent_map_bad_line_names_file_and_line(tmp_path, content, where):
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(DataError, match=rf"{path}{where}"):
        RegionTable.from_file(str(path))


def test_continent_map_bad_json_and_missing_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"us": "America",\n "ng": }')
    with pytest.raises(DataError, match=rf"{path}:2"):
        RegionTable.from_file(str(path))
    path.write_text('{"us": 3}')
    with pytest.raises(DataError, match="must be a string"):
        RegionTable.from_file(str(path))
    with pytest.raises(DataError, match="missing.tsv"):
        RegionTable.from_file(str(tmp_path / "missing.tsv"))


def test_normalize_country_cache_gives_the_same_answers():
    # normalize_country memoizes raw values: repeated and cache-evicting calls must agree with
    # a fresh table's first answer.
    from megatron_meta.metadata import regions

    table = RegionTable.default()
    values = ["U.K.", "Nigeria", "Atlantis", " us ", "IRL", "uk"]
    first = [table.normalize_country(v) for v in values]
    assert first == ["gb", "ng", None, "us", "ie", "gb"]
    assert [table.normalize_country(v) for v in values] == first
    # Free-text values beyond the cache size: the cache stays bounded.
    for i in range(regions._NORMALIZED_CACHE_SIZE + 10):
        assert table.normalize_country(f"nowhere {i}") is None
    assert len(table._normalized) <= regions._NORMALIZED_CACHE_SIZE
    assert [table.normalize_country(v) for v in values] == first


def test_continent_map_codes_added_after_a_lookup_are_found(tmp_path):
    # 'xk' is unknown until the map adds it; a cached "unknown" must not survive that.
    path = tmp_path / "map.tsv"
    path.write_text("xk\tEurope\nXK\tEurope\n", encoding="utf-8")
    table = RegionTable.from_file(str(path))
    assert table.normalize_country("XK") == "xk"
    assert table.continent_of("xk") == "Europe"
