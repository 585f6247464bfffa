"""The studio's words in Brazilian Portuguese and English; pack labels come from the pack."""

from __future__ import annotations

from collections.abc import Callable

from caverna.services.consistency_reports import REVIEW_REASONS

LOCALES: tuple[str, ...] = ("pt-BR", "en")
DEFAULT_LOCALE = "pt-BR"

MESSAGES: dict[str, dict[str, str]] = {
    "app.tagline": {
        "en": "On-brand character images",
        "pt-BR": "Imagens do personagem fiéis à marca",
    },
    "nav.generate": {"en": "Generate", "pt-BR": "Gerar"},
    "nav.storyboard": {"en": "Storyboard", "pt-BR": "Storyboard"},
    "nav.gallery": {"en": "Gallery", "pt-BR": "Galeria"},
    "nav.admin": {"en": "Admin", "pt-BR": "Administração"},
    "nav.logout": {"en": "Log out", "pt-BR": "Sair"},
    "nav.language": {"en": "Language", "pt-BR": "Idioma"},
    "nav.skip": {"en": "Skip to content", "pt-BR": "Pular para o conteúdo"},
    "login.title": {"en": "Sign in", "pt-BR": "Entrar"},
    "login.user": {"en": "User", "pt-BR": "Usuário"},
    "login.password": {"en": "Password", "pt-BR": "Senha"},
    "login.or_key": {"en": "or an API key", "pt-BR": "ou uma chave de API"},
    "login.key": {"en": "API key", "pt-BR": "Chave de API"},
    "login.submit": {"en": "Sign in", "pt-BR": "Entrar"},
    "login.failed": {
        "en": "That user and password (or key) did not work.",
        "pt-BR": "Usuário e senha (ou chave) não conferem.",
    },
    "generate.title": {"en": "Generate an image", "pt-BR": "Gerar uma imagem"},
    "generate.pose": {"en": "Pose", "pt-BR": "Pose"},
    "generate.outfit": {"en": "Outfit", "pt-BR": "Roupa"},
    "generate.footwear": {"en": "Footwear", "pt-BR": "Calçado"},
    "generate.props": {"en": "Props (up to two)", "pt-BR": "Objetos (até dois)"},
    "generate.frame": {"en": "Storyboard frame", "pt-BR": "Quadro do storyboard"},
    "generate.no_frame": {"en": "No frame (free scene)", "pt-BR": "Sem quadro (cena livre)"},
    "generate.aspect_ratio": {"en": "Aspect ratio", "pt-BR": "Proporção"},
    "generate.seed": {"en": "Seed (empty: random)", "pt-BR": "Semente (vazio: aleatória)"},
    "generate.provider": {"en": "Provider", "pt-BR": "Provedor"},
    "generate.prompt": {"en": "Compiled prompt", "pt-BR": "Prompt compilado"},
    "generate.negative": {"en": "Negative prompt", "pt-BR": "Prompt negativo"},
    "generate.submit": {"en": "Generate", "pt-BR": "Gerar"},
    "generate.valid": {"en": "Ready to generate.", "pt-BR": "Pronto para gerar."},
    "generate.default": {"en": "Default", "pt-BR": "Padrão"},
    "generate.problems": {"en": "Fix these first:", "pt-BR": "Corrija antes:"},
    "status.queued": {"en": "Queued", "pt-BR": "Na fila"},
    "status.processing": {"en": "Generating", "pt-BR": "Gerando"},
    "status.completed": {"en": "Done", "pt-BR": "Pronta"},
    "status.failed": {"en": "Failed", "pt-BR": "Falhou"},
    "status.cancelled": {"en": "Cancelled", "pt-BR": "Cancelada"},
    "status.deleted": {"en": "Deleted", "pt-BR": "Excluída"},
    "gallery.title": {"en": "Your images", "pt-BR": "Suas imagens"},
    "gallery.empty": {
        "en": "No images yet. Generate the first one.",
        "pt-BR": "Nenhuma imagem ainda. Gere a primeira.",
    },
    "gallery.no_match": {
        "en": "No image matches these filters.",
        "pt-BR": "Nenhuma imagem corresponde a esses filtros.",
    },
    "gallery.search": {"en": "Search prompt and labels", "pt-BR": "Buscar no prompt e rótulos"},
    "gallery.filter": {"en": "Filter", "pt-BR": "Filtrar"},
    "gallery.clear": {"en": "Clear", "pt-BR": "Limpar"},
    "gallery.any": {"en": "Any", "pt-BR": "Qualquer"},
    "gallery.status": {"en": "Status", "pt-BR": "Situação"},
    "gallery.sort": {"en": "Order", "pt-BR": "Ordem"},
    "gallery.newest": {"en": "Newest first", "pt-BR": "Mais recentes"},
    "gallery.oldest": {"en": "Oldest first", "pt-BR": "Mais antigas"},
    "gallery.more": {"en": "Next page", "pt-BR": "Próxima página"},
    "gallery.created_after": {"en": "From", "pt-BR": "De"},
    "gallery.created_before": {"en": "Until", "pt-BR": "Até"},
    "detail.title": {"en": "Image", "pt-BR": "Imagem"},
    "detail.parameters": {"en": "Parameters", "pt-BR": "Parâmetros"},
    "detail.provider": {"en": "Provider and model", "pt-BR": "Provedor e modelo"},
    "detail.seed": {"en": "Seed", "pt-BR": "Semente"},
    "detail.cost": {"en": "Estimated cost", "pt-BR": "Custo estimado"},
    "detail.timings": {"en": "Timings", "pt-BR": "Tempos"},
    "detail.versions": {"en": "Template and pack", "pt-BR": "Template e pacote"},
    "detail.download": {"en": "Download", "pt-BR": "Baixar"},
    "detail.share": {"en": "Create share link", "pt-BR": "Criar link de compartilhamento"},
    "detail.copy": {"en": "Copy", "pt-BR": "Copiar"},
    "detail.copied": {"en": "Copied", "pt-BR": "Copiado"},
    "detail.revoke": {"en": "Revoke", "pt-BR": "Revogar"},
    "detail.shares": {"en": "Share links", "pt-BR": "Links de compartilhamento"},
    "detail.regenerate_same": {"en": "Again, same seed", "pt-BR": "De novo, mesma semente"},
    "detail.regenerate_new": {"en": "Again, new seed", "pt-BR": "De novo, nova semente"},
    "detail.retry": {"en": "Try again", "pt-BR": "Tentar de novo"},
    "detail.delete": {"en": "Delete", "pt-BR": "Excluir"},
    "detail.confirm_delete": {
        "en": "Delete this image? This cannot be undone.",
        "pt-BR": "Excluir esta imagem? Não dá para desfazer.",
    },
    "detail.review": {"en": "Review", "pt-BR": "Avaliação"},
    "detail.approve": {"en": "Approve", "pt-BR": "Aprovar"},
    "detail.reject": {"en": "Reject", "pt-BR": "Reprovar"},
    "detail.reason": {"en": "Reason", "pt-BR": "Motivo"},
    "detail.note": {"en": "Note", "pt-BR": "Observação"},
    "detail.reviewed": {"en": "Reviewed", "pt-BR": "Avaliada"},
    "detail.approved": {"en": "Approved", "pt-BR": "Aprovada"},
    "detail.rejected": {"en": "Rejected", "pt-BR": "Reprovada"},
    "detail.revoked": {"en": "Revoked", "pt-BR": "Revogado"},
    "detail.reason_help": {
        "en": "Needed to reject; approving needs none.",
        "pt-BR": "Obrigatório para reprovar; para aprovar, não.",
    },
    "detail.no_reason": {"en": "No reason", "pt-BR": "Sem motivo"},
    "detail.review_problems": {"en": "Nothing was changed:", "pt-BR": "Nada foi alterado:"},
    "detail.error": {"en": "What went wrong", "pt-BR": "O que deu errado"},
    "detail.expires": {"en": "expires", "pt-BR": "expira"},
    "error.not_found": {"en": "Nothing here.", "pt-BR": "Nada aqui."},
    "error.forbidden": {"en": "This page is for admins.", "pt-BR": "Esta página é para admins."},
    "error.back": {"en": "Back to the studio", "pt-BR": "Voltar ao estúdio"},
    "error.method": {
        "en": "This address is not a page: follow a link or a button to it.",
        "pt-BR": "Este endereço não é uma página: chegue a ele por um link ou botão.",
    },
    "error.problem": {"en": "That did not work", "pt-BR": "Não deu certo"},
    "error.csrf": {
        "en": "This form expired. Reload the page and try again.",
        "pt-BR": "Este formulário expirou. Recarregue a página e tente de novo.",
    },
    "generate.unavailable": {"en": "unavailable", "pt-BR": "indisponível"},
    "generate.unavailable_count": {
        "en": "Unavailable with this choice: {count} — why",
        "pt-BR": "Indisponíveis com esta escolha: {count} — por quê",
    },
    "generate.progress": {"en": "Progress", "pt-BR": "Progresso"},
}

# Labels of the review reasons. The reasons themselves are the services' single list
# (consistency_reports.REVIEW_REASONS), so the studio can never offer one the API refuses;
# tests check that every reason has a label in both languages.
REVIEW_REASON_LABELS: dict[str, dict[str, str]] = {
    "off_model": {"en": "Character off model", "pt-BR": "Personagem fora do modelo"},
    "wrong_palette": {"en": "Colours off the palette", "pt-BR": "Cores fora da paleta"},
    "wrong_lighting": {"en": "Wrong lighting", "pt-BR": "Iluminação errada"},
    "anatomy": {"en": "Anatomy problems", "pt-BR": "Problemas de anatomia"},
    "composition": {"en": "Composition or framing", "pt-BR": "Composição ou enquadramento"},
    "text_space": {"en": "No room for the text", "pt-BR": "Sem espaço para o texto"},
    "duplicate": {"en": "Repeats another image", "pt-BR": "Repete outra imagem"},
    "artifacts": {"en": "Artifacts or stray text", "pt-BR": "Artefatos ou texto indevido"},
    "other": {"en": "Other", "pt-BR": "Outro"},
}


def reason_label(reason: str, locale: str) -> str:
    """A reason in the visitor's language; an unlabelled one shows its id rather than nothing."""
    entry = REVIEW_REASON_LABELS.get(reason)
    if entry is None:
        return reason
    return entry.get(locale) or entry["en"]


def reason_choices(locale: str) -> list[tuple[str, str]]:
    """(id, label) for every reason the services accept, in their order."""
    return [(reason, reason_label(reason, locale)) for reason in REVIEW_REASONS]


def register_messages(messages: dict[str, dict[str, str]]) -> None:
    """Each page module brings its own words; a key defined twice is a bug, caught at import."""
    clash = set(messages) & set(MESSAGES)
    if clash:
        raise ValueError(f"message keys defined twice: {sorted(clash)}")
    for key, entry in messages.items():
        if set(entry) != {"en", "pt-BR"}:
            raise ValueError(f"message {key!r} needs exactly 'en' and 'pt-BR'")
    MESSAGES.update(messages)


def pick_locale(wanted: str | None, accept_language: str | None) -> str:
    if wanted in LOCALES:
        return str(wanted)
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("pt"):
            return "pt-BR"
        if tag.startswith("en"):
            return "en"
    return DEFAULT_LOCALE


def translator(locale: str) -> Callable[[str], str]:
    def gettext(key: str) -> str:
        entry = MESSAGES.get(key)
        if entry is None:
            return key
        return entry.get(locale) or entry["en"]

    return gettext
