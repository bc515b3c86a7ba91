"""Country codes, country names and continents.

The default table is the paper's NOW mapping (arXiv 2601.15236: 18 countries in four continents,
``au`` and ``nz`` dropped) extended with every other ISO 3166-1 country, so that other corpora
work too. Continent names follow the paper ("America" for the whole Americas) plus "Oceania" and
"Antarctica". ``--continent-map FILE`` overrides entries. Country values are normalized from
codes ("NG", "uk"), alpha-3 codes ("USA") and English names ("United States", "U.K.", "Britain").
"""

from __future__ import annotations

import csv
import json
import re
from typing import Dict, FrozenSet, Iterable, Optional, Tuple

from megatron_meta.errors import DataError

# The authors' mapping (FACTS section 1). au and nz are deliberately absent.
NOW_CONTINENTS: Dict[str, str] = {
    **{cc: "Asia" for cc in ("bd", "hk", "in", "lk", "my", "ph", "pk", "sg")},
    **{cc: "America" for cc in ("ca", "jm", "us")},
    **{cc: "Europe" for cc in ("gb", "ie")},
    **{cc: "Africa" for cc in ("gh", "ke", "ng", "za", "tz")},
}

# alpha-2 | alpha-3 | continent | English name; aliases (";"-separated). Continents follow the UN
# geoscheme (so Cyprus and Turkey are Asia, Russia is Europe), with the Americas as "America".
_ISO_DATA = """
ad|and|Europe|Andorra
ae|are|Asia|United Arab Emirates;UAE
af|afg|Asia|Afghanistan
ag|atg|America|Antigua and Barbuda
ai|aia|America|Anguilla
al|alb|Europe|Albania
am|arm|Asia|Armenia
ao|ago|Africa|Angola
aq|ata|Antarctica|Antarctica
ar|arg|America|Argentina
as|asm|Oceania|American Samoa
at|aut|Europe|Austria
au|aus|Oceania|Australia
aw|abw|America|Aruba
ax|ala|Europe|Aland Islands;Åland Islands
az|aze|Asia|Azerbaijan
ba|bih|Europe|Bosnia and Herzegovina;Bosnia
bb|brb|America|Barbados
bd|bgd|Asia|Bangladesh
be|bel|Europe|Belgium
bf|bfa|Africa|Burkina Faso
bg|bgr|Europe|Bulgaria
bh|bhr|Asia|Bahrain
bi|bdi|Africa|Burundi
bj|ben|Africa|Benin
bl|blm|America|Saint Barthelemy;Saint Barthélemy
bm|bmu|America|Bermuda
bn|brn|Asia|Brunei;Brunei Darussalam
bo|bol|America|Bolivia
bq|bes|America|Caribbean Netherlands;Bonaire, Sint Eustatius and Saba
br|bra|America|Brazil
bs|bhs|America|Bahamas
bt|btn|Asia|Bhutan
bv|bvt|Antarctica|Bouvet Island
bw|bwa|Africa|Botswana
by|blr|Europe|Belarus
bz|blz|America|Belize
ca|can|America|Canada
cc|cck|Asia|Cocos (Keeling) Islands;Cocos Islands
cd|cod|Africa|DR Congo;Democratic Republic of the Congo;Congo-Kinshasa
cf|caf|Africa|Central African Republic
cg|cog|Africa|Republic of the Congo;Congo;Congo-Brazzaville
ch|che|Europe|Switzerland
ci|civ|Africa|Ivory Coast;Cote d'Ivoire;Côte d'Ivoire
ck|cok|Oceania|Cook Islands
cl|chl|America|Chile
cm|cmr|Africa|Cameroon
cn|chn|Asia|China;People's Republic of China;PRC
co|col|America|Colombia
cr|cri|America|Costa Rica
cu|cub|America|Cuba
cv|cpv|Africa|Cape Verde;Cabo Verde
cw|cuw|America|Curacao;Curaçao
cx|cxr|Asia|Christmas Island
cy|cyp|Asia|Cyprus
cz|cze|Europe|Czechia;Czech Republic
de|deu|Europe|Germany
dj|dji|Africa|Djibouti
dk|dnk|Europe|Denmark
dm|dma|America|Dominica
do|dom|America|Dominican Republic
dz|dza|Africa|Algeria
ec|ecu|America|Ecuador
ee|est|Europe|Estonia
eg|egy|Africa|Egypt
eh|esh|Africa|Western Sahara
er|eri|Africa|Eritrea
es|esp|Europe|Spain
et|eth|Africa|Ethiopia
fi|fin|Europe|Finland
fj|fji|Oceania|Fiji
fk|flk|America|Falkland Islands
fm|fsm|Oceania|Micronesia;Federated States of Micronesia
fo|fro|Europe|Faroe Islands
fr|fra|Europe|France
ga|gab|Africa|Gabon
gb|gbr|Europe|United Kingdom;UK;Great Britain;Britain;England;Scotland;Wales;Northern Ireland
gd|grd|America|Grenada
ge|geo|Asia|Georgia
gf|guf|America|French Guiana
gg|ggy|Europe|Guernsey
gh|gha|Africa|Ghana
gi|gib|Europe|Gibraltar
gl|grl|America|Greenland
gm|gmb|Africa|Gambia
gn|gin|Africa|Guinea
gp|glp|America|Guadeloupe
gq|gnq|Africa|Equatorial Guinea
gr|grc|Europe|Greece
gs|sgs|Antarctica|South Georgia and the South Sandwich Islands
gt|gtm|America|Guatemala
gu|gum|Oceania|Guam
gw|gnb|Africa|Guinea-Bissau
gy|guy|America|Guyana
hk|hkg|Asia|Hong Kong
hm|hmd|Antarctica|Heard Island and McDonald Islands
hn|hnd|America|Honduras
hr|hrv|Europe|Croatia
ht|hti|America|Haiti
hu|hun|Europe|Hungary
id|idn|Asia|Indonesia
ie|irl|Europe|Ireland;Republic of Ireland
il|isr|Asia|Israel
im|imn|Europe|Isle of Man
in|ind|Asia|India
io|iot|Asia|British Indian Ocean Territory
iq|irq|Asia|Iraq
ir|irn|Asia|Iran
is|isl|Europe|Iceland
it|ita|Europe|Italy
je|jey|Europe|Jersey
jm|jam|America|Jamaica
jo|jor|Asia|Jordan
jp|jpn|Asia|Japan
ke|ken|Africa|Kenya
kg|kgz|Asia|Kyrgyzstan
kh|khm|Asia|Cambodia
ki|kir|Oceania|Kiribati
km|com|Africa|Comoros
kn|kna|America|Saint Kitts and Nevis
kp|prk|Asia|North Korea
kr|kor|Asia|South Korea;Korea;Republic of Korea
kw|kwt|Asia|Kuwait
ky|cym|America|Cayman Islands
kz|kaz|Asia|Kazakhstan
la|lao|Asia|Laos
lb|lbn|Asia|Lebanon
lc|lca|America|Saint Lucia
li|lie|Europe|Liechtenstein
lk|lka|Asia|Sri Lanka
lr|lbr|Africa|Liberia
ls|lso|Africa|Lesotho
lt|ltu|Europe|Lithuania
lu|lux|Europe|Luxembourg
lv|lva|Europe|Latvia
ly|lby|Africa|Libya
ma|mar|Africa|Morocco
mc|mco|Europe|Monaco
md|mda|Europe|Moldova
me|mne|Europe|Montenegro
mf|maf|America|Saint Martin
mg|mdg|Africa|Madagascar
mh|mhl|Oceania|Marshall Islands
mk|mkd|Europe|North Macedonia;Macedonia
ml|mli|Africa|Mali
mm|mmr|Asia|Myanmar;Burma
mn|mng|Asia|Mongolia
mo|mac|Asia|Macau;Macao
mp|mnp|Oceania|Northern Mariana Islands
mq|mtq|America|Martinique
mr|mrt|Africa|Mauritania
ms|msr|America|Montserrat
mt|mlt|Europe|Malta
mu|mus|Africa|Mauritius
mv|mdv|Asia|Maldives
mw|mwi|Africa|Malawi
mx|mex|America|Mexico
my|mys|Asia|Malaysia
mz|moz|Africa|Mozambique
na|nam|Africa|Namibia
nc|ncl|Oceania|New Caledonia
ne|ner|Africa|Niger
nf|nfk|Oceania|Norfolk Island
ng|nga|Africa|Nigeria
ni|nic|America|Nicaragua
nl|nld|Europe|Netherlands;Holland
no|nor|Europe|Norway
np|npl|Asia|Nepal
nr|nru|Oceania|Nauru
nu|niu|Oceania|Niue
nz|nzl|Oceania|New Zealand
om|omn|Asia|Oman
pa|pan|America|Panama
pe|per|America|Peru
pf|pyf|Oceania|French Polynesia
pg|png|Oceania|Papua New Guinea
ph|phl|Asia|Philippines
pk|pak|Asia|Pakistan
pl|pol|Europe|Poland
pm|spm|America|Saint Pierre and Miquelon
pn|pcn|Oceania|Pitcairn Islands;Pitcairn
pr|pri|America|Puerto Rico
ps|pse|Asia|Palestine;State of Palestine
pt|prt|Europe|Portugal
pw|plw|Oceania|Palau
py|pry|America|Paraguay
qa|qat|Asia|Qatar
re|reu|Africa|Reunion;Réunion
ro|rou|Europe|Romania
rs|srb|Europe|Serbia
ru|rus|Europe|Russia;Russian Federation
rw|rwa|Africa|Rwanda
sa|sau|Asia|Saudi Arabia
sb|slb|Oceania|Solomon Islands
sc|syc|Africa|Seychelles
sd|sdn|Africa|Sudan
se|swe|Europe|Sweden
sg|sgp|Asia|Singapore
sh|shn|Africa|Saint Helena;Saint Helena, Ascension and Tristan da Cunha
si|svn|Europe|Slovenia
sj|sjm|Europe|Svalbard and Jan Mayen
sk|svk|Europe|Slovakia
sl|sle|Africa|Sierra Leone
sm|smr|Europe|San Marino
sn|sen|Africa|Senegal
so|som|Africa|Somalia
sr|sur|America|Suriname
ss|ssd|Africa|South Sudan
st|stp|Africa|Sao Tome and Principe;São Tomé and Príncipe
sv|slv|America|El Salvador
sx|sxm|America|Sint Maarten
sy|syr|Asia|Syria
sz|swz|Africa|Eswatini;Swaziland
tc|tca|America|Turks and Caicos Islands
td|tcd|Africa|Chad
tf|atf|Antarctica|French Southern Territories
tg|tgo|Africa|Togo
th|tha|Asia|Thailand
tj|tjk|Asia|Tajikistan
tk|tkl|Oceania|Tokelau
tl|tls|Asia|Timor-Leste;East Timor
tm|tkm|Asia|Turkmenistan
tn|tun|Africa|Tunisia
to|ton|Oceania|Tonga
tr|tur|Asia|Turkey;Türkiye
tt|tto|America|Trinidad and Tobago
tv|tuv|Oceania|Tuvalu
tw|twn|Asia|Taiwan
tz|tza|Africa|Tanzania
ua|ukr|Europe|Ukraine
ug|uga|Africa|Uganda
um|umi|Oceania|United States Minor Outlying Islands
us|usa|America|United States;United States of America;US;U.S.;U.S.A.
uy|ury|America|Uruguay
uz|uzb|Asia|Uzbekistan
va|vat|Europe|Vatican City;Holy See
vc|vct|America|Saint Vincent and the Grenadines
ve|ven|America|Venezuela
vg|vgb|America|British Virgin Islands
vi|vir|America|U.S. Virgin Islands;United States Virgin Islands
vn|vnm|Asia|Vietnam;Viet Nam
vu|vut|Oceania|Vanuatu
wf|wlf|Oceania|Wallis and Futuna
ws|wsm|Oceania|Samoa
ye|yem|Asia|Yemen
yt|myt|Africa|Mayotte
za|zaf|Africa|South Africa
zm|zmb|Africa|Zambia
zw|zwe|Africa|Zimbabwe
"""


def _parse_iso() -> Tuple[Dict[str, str], Dict[str, str]]:
    continents: Dict[str, str] = {}
    aliases: Dict[str, str] = {}
    for line in _ISO_DATA.strip().splitlines():
        alpha2, alpha3, continent, names = line.split("|")
        continents[alpha2] = continent
        aliases[alpha3] = alpha2
        for name in names.split(";"):
            aliases[_name_key(name)] = alpha2
    aliases["uk"] = "gb"  # the common (non-ISO) code for the United Kingdom
    return continents, aliases


def _name_key(value: str) -> str:
    """Lookup key of a country name: lowercase, no dots, one space, no leading 'the'."""
    key = value.strip().lower().replace(".", "").replace("&", " and ")
    key = re.sub(r"\s+", " ", key).strip()
    return key[4:] if key.startswith("the ") else key


_ISO_CONTINENTS, _ALIASES = _parse_iso()

# Every ISO 3166-1 alpha-2 code -> continent; NOW's mapping wins where they overlap.
ISO_CONTINENTS: Dict[str, str] = {**_ISO_CONTINENTS, **NOW_CONTINENTS}

_NORMALIZED_CACHE_SIZE = 4096

_HEADER_KEYS = {"country", "cc", "code", "country_code"}


def slug(region: str) -> str:
    """File-name-safe form of a region: ``"North America"`` -> ``"north_america"``."""
    return re.sub(r"[^a-z0-9]+", "_", region.strip().lower()).strip("_")


class RegionTable:
    """Country code -> continent, plus normalization of country codes and names."""

    def __init__(self, continents: Dict[str, str], explicit: Iterable[str] = ()) -> None:
        self._continents = dict(continents)
        #: Codes a user named in a ``--continent-map`` file (readers such as NOW keep them even
        #: when their own default country list would drop them).
        self.explicit: FrozenSet[str] = frozenset(explicit)
        # Raw value -> result of normalize_country. A corpus spells its countries a few ways, and
        # this lookup runs once per record in the main process of preprocessing (a regex each).
        self._normalized: Dict[str, Optional[str]] = {}

    @classmethod
    def default(cls) -> "RegionTable":
        """NOW's mapping plus all other ISO countries."""
        return cls(ISO_CONTINENTS)

    @classmethod
    def from_file(cls, path: str) -> "RegionTable":
        """Default table overridden by ``path``: JSON ``{"cc": "Continent"}`` or TSV/CSV lines.

        Lines are ``cc<TAB>Continent`` (or comma-separated); blank lines, ``#`` comments and a
        ``country,continent`` header are ignored. Keys may be codes or country names.
        """
        try:
            with open(path, encoding="utf-8") as f:
                content = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"--continent-map {path}: cannot read: {e}") from e
        table = cls.default()
        entries = []  # (where, key, continent)
        if content.lstrip().startswith("{"):
            try:
                obj = json.loads(content)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{e.lineno}: invalid JSON in --continent-map: {e.msg}") from e
            for key, value in obj.items():
                if not isinstance(value, str):
                    raise DataError(f"{path}: continent of {key!r} must be a string, got {value!r}")
                entries.append((path, key, value))
        else:
            for lineno, line in enumerate(content.splitlines(), 1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                delimiter = "\t" if "\t" in line else ","
                fields = [f.strip() for f in next(csv.reader([line], delimiter=delimiter))]
                if len(fields) == 2 and lineno == 1 and fields[0].lower() in _HEADER_KEYS:
                    continue
                if len(fields) != 2 or not fields[0] or not fields[1]:
                    raise DataError(
                        f"{path}:{lineno}: expected 'country<TAB>Continent', got {line!r}"
                    )
                entries.append((f"{path}:{lineno}", fields[0], fields[1]))
        explicit = []
        for where, key, continent in entries:
            code = table.normalize_country(key)
            if code is None:
                if not re.fullmatch(r"[A-Za-z]{2}", key.strip()):
                    raise DataError(
                        f"{where}: unknown country {key!r}; use an ISO 3166 alpha-2 code or an "
                        "English country name"
                    )
                code = key.strip().lower()  # a new two-letter code (e.g. 'xk' for Kosovo)
            if not continent.strip():
                raise DataError(f"{where}: empty continent for {key!r}")
            table._continents[code] = continent.strip()
            table._normalized.clear()  # the table changed: earlier answers may be stale
            explicit.append(code)
        return cls(table._continents, explicit)

    def normalize_country(self, value: str) -> Optional[str]:
        """Lowercase code of a country code, alpha-3 code or English name; None if unknown."""
        if not isinstance(value, str):
            return None
        try:
            return self._normalized[value]
        except KeyError:
            pass
        code = self._normalize(value)
        if len(self._normalized) >= _NORMALIZED_CACHE_SIZE:  # only with free-text country fields
            self._normalized.clear()
        self._normalized[value] = code
        return code

    def _normalize(self, value: str) -> Optional[str]:
        key = _name_key(value)
        if key in self._continents:
            return key
        code = _ALIASES.get(key)
        if code is not None and code in self._continents:
            return code
        return None

    def continent_of(self, code: str) -> Optional[str]:
        """Continent of a (normalized) code; None if the table has none."""
        return self._continents.get(code)

    @property
    def codes(self) -> FrozenSet[str]:
        """All codes the table knows."""
        return frozenset(self._continents)


def country_name(code: str) -> str:
    """English name of an ISO alpha-2 code (``"ng"`` -> ``"Nigeria"``); the code when unknown."""
    for line in _ISO_DATA.strip().splitlines():
        alpha2, _, _, names = line.split("|")
        if alpha2 == code.lower():
            return names.split(";")[0]
    return code
