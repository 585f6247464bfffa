"""Problems in the visitor's language: pt-BR text for every code, with its parameters filled in.

The engine and the services speak English, with one stable code per rule and the details inside
the message (which pose, how many hands, which frame). The studio keeps that contract untouched
and translates at its edge: each code has one or more English shapes it is known to take, read
back into their parameters, and a Portuguese sentence built from them, naming options and frames
by their pack labels rather than their ids. A message in a shape not listed here still gets the
code's general Portuguese sentence (with the allowed values), never raw English; only a code
with no entry at all (an API-level code such as a quota) is shown as it came.

The tests enumerate the codes the engine can emit from its source and fail when one has no entry,
and check each listed shape against messages the engine really produced.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from caverna.brand.pack import BrandPack
from caverna.domain.problems import Problem

# option kinds with their article, as a sentence uses them
KIND_NOUN = {"pose": "a pose", "outfit": "a roupa", "footwear": "o calçado", "prop": "o objeto"}
KIND_BARE = {"pose": "pose", "outfit": "roupa", "footwear": "calçado", "prop": "objeto"}
# pydantic's words for types, as "Input should be a valid <type>" names them
TYPE_WORDS = {
    "integer": "um número inteiro",
    "string": "um texto",
    "list": "uma lista",
    "dictionary": "um objeto",
    "boolean": "verdadeiro ou falso",
    "number": "um número",
}
FIELD_LABELS: dict[str, dict[str, str]] = {
    "pose": {"en": "Pose", "pt-BR": "Pose"},
    "outfit": {"en": "Outfit", "pt-BR": "Roupa"},
    "footwear": {"en": "Footwear", "pt-BR": "Calçado"},
    "props": {"en": "Props", "pt-BR": "Objetos"},
    "frame": {"en": "Frame", "pt-BR": "Quadro"},
    "aspect_ratio": {"en": "Aspect ratio", "pt-BR": "Proporção"},
    "seed": {"en": "Seed", "pt-BR": "Semente"},
    "provider": {"en": "Provider", "pt-BR": "Provedor"},
    "scene_notes": {"en": "Scene notes", "pt-BR": "Notas da cena"},
    "pack": {"en": "Pack", "pt-BR": "Pacote"},
    "locale": {"en": "Language", "pt-BR": "Idioma"},
    "sequence": {"en": "Storyboard", "pt-BR": "Storyboard"},
    "prompt": {"en": "Prompt", "pt-BR": "Prompt"},
    "negative_prompt": {"en": "Negative prompt", "pt-BR": "Prompt negativo"},
    "text": {"en": "Search", "pt-BR": "Busca"},
    "statuses": {"en": "Status", "pt-BR": "Situação"},
    "sort": {"en": "Order", "pt-BR": "Ordem"},
    "created_after": {"en": "From", "pt-BR": "De"},
    "created_before": {"en": "Until", "pt-BR": "Até"},
    "cursor": {"en": "Page", "pt-BR": "Página"},
    "reason": {"en": "Reason", "pt-BR": "Motivo"},
    "verdict": {"en": "Review", "pt-BR": "Avaliação"},
}
_INDEXED = re.compile(r"^(?P<name>[a-z_]+)\[(?P<index>\d+)\]$")

# The general sentence of every code: used when a message is in a shape not listed below.
GENERAL: dict[str, str] = {
    "invalid_type": "O valor não é do tipo esperado.",
    "unknown_field": "Este campo não é aceito.",
    "out_of_range": "O valor está fora do intervalo aceito.",
    "invalid_choice": "Este valor não está entre as opções aceitas.",
    "too_long": "O texto é longo demais.",
    "invalid_characters": "Há caracteres de controle ou invisíveis, que não são aceitos.",
    "invalid_cursor": "A página pedida não é válida: comece de novo pela primeira.",
    "invalid_range": "O intervalo de datas está invertido: nenhuma imagem caberia nele.",
    "invalid_callback_url": "O endereço de retorno (webhook) não é aceito.",
    "not_found": "Não encontrado.",
    "unknown_pack": "Este pacote de marca não está instalado.",
    "unknown_option": "Esta opção não existe no pacote.",
    "unknown_frame": "Este quadro não existe no pacote.",
    "unknown_sequence": "Este storyboard não existe no pacote.",
    "unknown_provider": "Este provedor não está disponível.",
    "unsupported_aspect_ratio": "Esta proporção não é oferecida pelo pacote.",
    "slot_overflow": "Há objetos demais para uma imagem.",
    "duplicate_option": "A mesma opção foi escolhida duas vezes.",
    "hands_overloaded": "A pose não deixa mãos livres suficientes para esses objetos.",
    "incompatible_options": "Estas opções não combinam entre si.",
    "missing_required_option": "Esta opção exige outra que não foi escolhida.",
    "not_allowed_in_frame": "Esta opção não é usada neste quadro.",
    "required_by_frame": "O quadro exige uma opção que não foi escolhida.",
    "not_allowed_in_sequence": "Cada quadro do storyboard define este campo; ele não é comum.",
    "forbidden_by_frame": "O quadro não permite esta opção.",
    "prompt_too_long": "O prompt compilado é longo demais para o provedor.",
    "content_blocked": "Este texto foi bloqueado pela política de conteúdo da marca.",
    "pack_file_missing": "Falta um arquivo no pacote.",
    "pack_yaml_syntax": "Um arquivo do pacote tem erro de sintaxe YAML.",
    "pack_schema": "Um arquivo do pacote não segue o formato.",
    "pack_reference": "O pacote faz referência a algo que não existe ou quebra uma regra.",
    "pack_duplicate_id": "O pacote repete um identificador.",
}

# codes of the studio's own forms (not the engine's), with their one sentence
STUDIO: dict[str, str] = {
    "reason_required": "Escolha o motivo da reprovação.",
    # the API's own refusals, which the pages show too
    "quota_exceeded": "Sua cota de imagens (ou de custo) acabou por agora; fale com um admin.",
    "rate_limited": "Pedidos demais em pouco tempo; tente de novo em instantes.",
    "unavailable": "Um serviço necessário está fora do ar; tente de novo em instantes.",
    "database_unavailable": "O banco de dados está fora do ar; tente de novo em instantes.",
    "moderation_unavailable": "A moderação de conteúdo está fora do ar; tente de novo logo mais.",
    "content_blocked": GENERAL["content_blocked"],
    "invalid_link": "Este link expirou ou foi revogado: peça um novo a quem o compartilhou.",
}


class Names:
    """Option and frame names as a pt-BR reader knows them: the pack's labels, else the ids."""

    def __init__(self, pack: BrandPack | None) -> None:
        self.pack = pack

    def label(self, kind: str, option_id: str) -> str:
        if self.pack is not None and kind in KIND_NOUN:
            option = self.pack.options(kind).get(option_id)  # type: ignore[arg-type]
            if option is not None:
                return str(option.labels.pt_br)
        return option_id

    def option(self, kind: str, option_id: str) -> str:
        """`a pose “Braços cruzados”`: the kind with its article, then the label."""
        noun = KIND_NOUN.get(kind, kind)
        return f"{noun} “{self.label(kind, option_id)}”"

    def ref(self, ref: str) -> str:
        """An option written `kind:id` or `kind id`, as the rules quote it."""
        kind, _, option_id = ref.replace(":", " ", 1).partition(" ")
        return self.option(kind, option_id)

    def frame(self, ref: str) -> str:
        if self.pack is not None:
            entry = self.pack.frames.get(ref)
            if entry is not None:
                return f"“{entry.frame.title.pt_br}”"
        return f"“{ref}”"

    def frames(self, refs: str) -> str:
        return join([self.frame(ref.strip()) for ref in refs.split(",") if ref.strip()])

    def props(self, ids: str) -> str:
        return join([f"“{self.label('prop', i.strip())}”" for i in ids.split(",") if i.strip()])


def join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " e " + items[-1]


def sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


Render = Callable[[Mapping[str, str], Names], str]


@dataclass(frozen=True, slots=True)
class Shape:
    """One English form a code's message takes, and its Portuguese sentence."""

    pattern: re.Pattern[str]
    render: Render


def shape(pattern: str, render: Render) -> Shape:
    return Shape(re.compile(pattern, re.DOTALL), render)


def _choices(text: str) -> str:
    """`'pt-BR' or 'en'` as `“pt-BR” ou “en”`."""
    values = [v.strip(" '\"") for v in re.split(r",| or ", text) if v.strip(" '\"")]
    return join([f"“{v}”" for v in values]).replace(" e “", " ou “")


def _rule_shapes() -> list[tuple[str, Shape]]:
    """The combination rules of brand/rules.py; also read inside a pack-validation message."""
    return [
        (
            "slot_overflow",
            shape(
                r"at most (?P<limit>\d+) props fit in one image; (?P<count>\d+) were chosen",
                lambda g, n: (
                    f"Cabem no máximo {g['limit']} objetos em uma imagem; "
                    f"foram escolhidos {g['count']}."
                ),
            ),
        ),
        (
            "duplicate_option",
            shape(
                r"prop '(?P<prop>[^']+)' is chosen twice",
                lambda g, n: f"{sentence(n.option('prop', g['prop']))} foi escolhido duas vezes.",
            ),
        ),
        (
            "hands_overloaded",
            shape(
                r"pose '(?P<pose>[^']+)' leaves (?P<free>\d+) hand\(s\) free but the props "
                r"(?P<held>.*) need (?P<needed>\d+)",
                lambda g, n: (
                    f"{sentence(n.option('pose', g['pose']))} deixa "
                    f"{_hands(g['free'])} {'livre' if g['free'] == '1' else 'livres'}, mas "
                    f"{n.props(g['held'])} "
                    f"{'precisa' if ',' not in g['held'] else 'precisam'} de {_hands(g['needed'])}."
                ),
            ),
        ),
        (
            "incompatible_options",
            shape(
                r"(?P<kind_b>[a-z]+) '(?P<id_b>[^']+)' cannot be combined with "
                r"(?P<kind_a>[a-z]+) '(?P<id_a>[^']+)'",
                lambda g, n: (
                    f"{sentence(n.option(g['kind_b'], g['id_b']))} não combina com "
                    f"{n.option(g['kind_a'], g['id_a'])}."
                ),
            ),
        ),
        (
            "missing_required_option",
            shape(
                r"(?P<kind>[a-z]+) '(?P<id>[^']+)' requires '(?P<ref>[a-z]+ [^']+)'",
                lambda g, n: f"{sentence(n.option(g['kind'], g['id']))} exige {n.ref(g['ref'])}.",
            ),
        ),
        (
            "not_allowed_in_frame",
            shape(
                r"(?P<kind>[a-z]+) '(?P<id>[^']+)' is only used in frames (?P<frames>.+), "
                r"not in (?:frame '(?P<frame>[^']+)'|an image without a frame)",
                lambda g, n: (
                    f"{sentence(n.option(g['kind'], g['id']))} só aparece "
                    f"{'no quadro' if ',' not in g['frames'] else 'nos quadros'} "
                    f"{n.frames(g['frames'])}, não "
                    + (f"no quadro {n.frame(g['frame'])}." if g.get("frame") else "sem quadro.")
                ),
            ),
        ),
        (
            "required_by_frame",
            shape(
                r"frame '(?P<frame>[^']+)' needs '(?P<ref>[a-z]+ [^']+)'",
                lambda g, n: f"O quadro {n.frame(g['frame'])} exige {n.ref(g['ref'])}.",
            ),
        ),
        (
            "forbidden_by_frame",
            shape(
                r"frame '(?P<frame>[^']+)' does not allow '(?P<ref>[a-z]+ [^']+)'",
                lambda g, n: f"O quadro {n.frame(g['frame'])} não permite {n.ref(g['ref'])}.",
            ),
        ),
    ]


def _plural(count: str, one: str, many: str) -> str:
    return one if count == "1" else many


def _hands(count: str) -> str:
    return f"{count} mão" if count == "1" else f"{count} mãos"


def _frame_defaults(g: Mapping[str, str], n: Names) -> str:
    inner = _rule_sentence(g["rule"], n)
    return f"Os padrões do quadro quebram uma regra: {inner}"


def _rule_sentence(message: str, names: Names) -> str:
    for _, candidate in _rule_shapes():
        found = candidate.pattern.fullmatch(message)
        if found:
            return candidate.render(_groups(found), names)
    return message


def _groups(found: re.Match[str]) -> dict[str, str]:
    return {key: value for key, value in found.groupdict().items() if value is not None}


def _catalogue() -> dict[str, tuple[Shape, ...]]:
    shapes: dict[str, list[Shape]] = {}
    for code, one in _rule_shapes():
        shapes.setdefault(code, []).append(one)
    more: list[tuple[str, Shape]] = [
        # parameter shapes (prompting/validation.py, and pydantic's own words)
        (
            "invalid_type",
            shape(
                r"parameters must be an object", lambda g, n: "Os parâmetros devem ser um objeto."
            ),
        ),
        (
            "invalid_type",
            shape(
                r"Input should be a valid (?P<type>[a-z]+)(?P<rest>.*)",
                lambda g, n: f"Informe {TYPE_WORDS.get(g['type'], g['type'])}.",
            ),
        ),
        (
            "invalid_type",
            shape(
                r"(?:String|List|Value) should have at least (?P<n>\d+) (?P<what>[a-z]+).*",
                lambda g, n: (
                    f"Informe pelo menos {g['n']} "
                    + (
                        _plural(g["n"], "caractere", "caracteres")
                        if g["what"].startswith("character")
                        else _plural(g["n"], "item", "itens")
                    )
                    + "."
                ),
            ),
        ),
        (
            "invalid_type",
            shape(r"'(?P<raw>.*)' is not a number", lambda g, n: f"“{g['raw']}” não é um número."),
        ),
        (
            "invalid_type",
            shape(r"'(?P<raw>.*)' is not a date", lambda g, n: f"“{g['raw']}” não é uma data."),
        ),
        (
            "invalid_type",
            shape(
                r"(?P<name>[a-z_]+) needs a time zone.*",
                lambda g, n: "A data precisa de um fuso horário (como +00:00 ou Z).",
            ),
        ),
        (
            "out_of_range",
            shape(
                r"Input should be (?P<op>greater than or equal to|less than or equal to|"
                r"greater than|less than) (?P<limit>-?[\d.]+)",
                lambda g, n: (
                    "O valor deve ser "
                    + {
                        "greater than or equal to": "maior ou igual a",
                        "less than or equal to": "menor ou igual a",
                        "greater than": "maior que",
                        "less than": "menor que",
                    }[g["op"]]
                    + f" {g['limit']}."
                ),
            ),
        ),
        (
            "too_long",
            shape(
                r"String should have at most (?P<n>\d+) characters?.*",
                lambda g, n: f"Use no máximo {g['n']} caracteres.",
            ),
        ),
        (
            "too_long",
            shape(
                r"List should have at most (?P<n>\d+) items?.*",
                lambda g, n: f"Escolha no máximo {g['n']} itens.",
            ),
        ),
        (
            "too_long",
            shape(
                r"the search text has (?P<count>\d+) characters; at most (?P<n>\d+) are accepted",
                lambda g, n: f"A busca tem {g['count']} caracteres; o máximo é {g['n']}.",
            ),
        ),
        (
            "invalid_characters",
            shape(
                r"control or invisible characters are not allowed: (?P<chars>.+)",
                lambda g, n: f"Caracteres de controle ou invisíveis não são aceitos: {g['chars']}.",
            ),
        ),
        (
            "invalid_choice",
            shape(
                r"Input should be (?P<choices>'.+')",
                lambda g, n: f"Escolha uma destas opções: {_choices(g['choices'])}.",
            ),
        ),
        (
            "unknown_field",
            shape(
                r"'(?P<field>[^']+)' is not a parameter",
                lambda g, n: f"“{g['field']}” não é um parâmetro aceito.",
            ),
        ),
        (
            "slot_overflow",
            shape(
                r"at most (?P<accepted>\d+) props are accepted, and at most (?P<fit>\d+) fit in "
                r"one image",
                lambda g, n: (
                    f"São aceitos no máximo {g['accepted']} objetos, e cabem no máximo "
                    f"{g['fit']} em uma imagem."
                ),
            ),
        ),
        # references into the pack
        (
            "unsupported_aspect_ratio",
            shape(
                r"aspect ratio '(?P<ratio>[^']+)' is not offered by pack '(?P<pack>[^']+)'",
                lambda g, n: (
                    f"A proporção “{g['ratio']}” não é oferecida pelo pacote “{g['pack']}”."
                ),
            ),
        ),
        (
            "unknown_option",
            shape(
                r"no (?P<kind>[a-z]+) '(?P<value>.*)' in pack '(?P<pack>[^']+)'",
                lambda g, n: (
                    f"Não existe {KIND_BARE.get(g['kind'], g['kind'])} "
                    f"“{g['value']}” no pacote “{g['pack']}”."
                ),
            ),
        ),
        (
            "unknown_frame",
            shape(
                r"no frame '(?P<value>.*)' in pack '(?P<pack>[^']+)'",
                lambda g, n: f"Não existe quadro “{g['value']}” no pacote “{g['pack']}”.",
            ),
        ),
        (
            "unknown_sequence",
            shape(
                r"no sequence '(?P<value>.*)' in pack '(?P<pack>[^']+)'",
                lambda g, n: f"Não existe storyboard “{g['value']}” no pacote “{g['pack']}”.",
            ),
        ),
        (
            "unknown_pack",
            shape(
                r"no brand pack with id '(?P<value>.*)' is installed",
                lambda g, n: f"Nenhum pacote de marca com id “{g['value']}” está instalado.",
            ),
        ),
        (
            "unknown_provider",
            shape(
                r"no provider dialect named '(?P<value>.*)'",
                lambda g, n: f"Não existe provedor chamado “{g['value']}”.",
            ),
        ),
        (
            "unknown_provider",
            shape(
                r"provider '(?P<value>.*)' is not configured here",
                lambda g, n: f"O provedor “{g['value']}” não está configurado aqui.",
            ),
        ),
        # sequences and provider limits (prompting/engine.py)
        (
            "not_allowed_in_sequence",
            shape(
                r"'(?P<name>[^']+)' is set by each frame of a sequence and cannot be shared",
                lambda g, n: (
                    f"“{g['name']}” é definido por cada quadro do storyboard e não "
                    "pode ser comum a todos."
                ),
            ),
        ),
        (
            "prompt_too_long",
            shape(
                r"the compiled (?P<what>prompt|negative prompt) has (?P<count>\d+) characters; "
                r"(?P<title>.+) accepts at most (?P<limit>\d+)",
                lambda g, n: (
                    f"O {'prompt negativo' if g['what'] != 'prompt' else 'prompt'} "
                    f"compilado tem {g['count']} caracteres; {g['title']} aceita no máximo "
                    f"{g['limit']}."
                ),
            ),
        ),
        # pack validation: a frame whose defaults break a rule
        (
            "pack_reference",
            shape(r"the frame's defaults break a rule: (?P<rule>.+)", _frame_defaults),
        ),
        # content safety: the reason names the term or the categories, never the user's text
        (
            "content_blocked",
            shape(
                r"'(?P<term>.+)' is not allowed in this brand's images",
                lambda g, n: f"“{g['term']}” não é permitido nas imagens desta marca.",
            ),
        ),
        (
            "content_blocked",
            shape(
                r"flagged by content moderation: (?P<categories>.+)",
                lambda g, n: f"Bloqueado pela moderação de conteúdo: {g['categories']}.",
            ),
        ),
        # the gallery's listing
        (
            "invalid_range",
            shape(
                r"created_after \((?P<after>[^)]+)\) is later than created_before "
                r"\((?P<before>[^)]+)\).*",
                lambda g, n: (
                    f"A data inicial ({g['after'][:10]}) é posterior à final "
                    f"({g['before'][:10]}): nenhuma imagem caberia no intervalo."
                ),
            ),
        ),
    ]
    for code, one in more:
        shapes.setdefault(code, []).append(one)
    return {code: tuple(found) for code, found in shapes.items()}


CATALOGUE: dict[str, tuple[Shape, ...]] = _catalogue()


def translated_codes() -> set[str]:
    """Every code with a Portuguese text (its general sentence, and usually some shapes)."""
    return set(GENERAL) | set(CATALOGUE) | set(STUDIO)


def message(code: str, english: str, locale: str, pack: BrandPack | None = None) -> str:
    """The message for this locale: English as it came, pt-BR from the catalogue."""
    if locale != "pt-BR":
        return english
    names = Names(pack)
    for candidate in CATALOGUE.get(code, ()):
        found = candidate.pattern.fullmatch(english.strip())
        if found:
            return candidate.render(_groups(found), names)
    general = GENERAL.get(code) or STUDIO.get(code)
    return general if general is not None else english


def field_label(field: str, locale: str) -> str:
    """`props[1]` as `Objetos (2º)`: the visitor's word for the field, or the field itself."""
    indexed = _INDEXED.match(field)
    name, index = (indexed.group("name"), indexed.group("index")) if indexed else (field, None)
    words = FIELD_LABELS.get(name)
    if words is None:
        return field
    text = words.get(locale) or words["en"]
    if index is None:
        return text
    number = int(index) + 1
    return f"{text} ({number}º)" if locale == "pt-BR" else f"{text} (#{number})"


def localize(
    problem: Problem | Mapping[str, Any], locale: str, pack: BrandPack | None = None
) -> dict[str, Any]:
    """A problem as the page shows it: the API's fields, the message and field in `locale`."""
    data: dict[str, Any] = dict(problem.to_dict() if isinstance(problem, Problem) else problem)
    code = str(data.get("code") or "")
    english = str(data.get("message") or "")
    data["message"] = message(code, english, locale, pack)
    allowed = data.get("allowed")
    if locale == "pt-BR" and allowed and data["message"] == GENERAL.get(code):
        data["message"] += " Aceitos: " + ", ".join(str(a) for a in list(allowed)[:12]) + "."
    data["field_label"] = field_label(str(data.get("field") or ""), locale)
    return data


def localize_all(
    problems: Iterable[Problem | Mapping[str, Any]], locale: str, pack: BrandPack | None = None
) -> list[dict[str, Any]]:
    return [localize(problem, locale, pack) for problem in problems]
