"""Screens in Spanish (Mexico) first, English selectable (design decision 10).

The catalogue is a plain dictionary per language rather than gettext files: the UI has a few
hundred short strings, a newcomer can add one next to its translation, and a test checks that
both languages have every key. Dates and numbers are formatted by Babel in the chosen
locale and the kit's time zone.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from babel import dates as babel_dates
from babel import numbers as babel_numbers

LANGUAGES = ("es-MX", "en")
BABEL_LOCALE = {"es-MX": "es_MX", "en": "en_US"}

MESSAGES: dict[str, dict[str, str]] = {
    "es-MX": {
        "app.title": "Acopio",
        "nav.recent": "Lo más reciente",
        "nav.archive": "Archivo",
        "nav.search": "Buscar",
        "nav.status": "Estado",
        "nav.users": "Usuarios",
        "nav.account": "Mi cuenta",
        "nav.logout": "Salir",
        "nav.language": "Idioma",
        "lang.es-MX": "Español (México)",
        "lang.en": "English",
        "role.director": "Dirección",
        "role.photographer": "Fotografía",
        "role.social": "Redes y video",
        "role.designer": "Diseño",
        "role.assistant": "Auxiliar",
        "kind.photo": "Foto",
        "kind.raw": "RAW",
        "kind.video": "Video",
        "kind.audio": "Audio",
        "kind.other": "Otro",
        "setup.title": "Primer arranque",
        "setup.intro": "Escriba el código de configuración que aparece en la consola del "
                       "equipo (o en su registro) para crear la cuenta de Dirección.",
        "setup.code": "Código de configuración",
        "setup.submit": "Crear cuenta de Dirección",
        "setup.done": "Ya existe una cuenta. Inicie sesión.",
        "setup.bad_code": "El código no es válido o ya se usó.",
        "login.title": "Iniciar sesión",
        "login.username": "Usuario",
        "login.password": "Contraseña",
        "login.submit": "Entrar",
        "login.failed": "Usuario o contraseña incorrectos.",
        "login.throttled": "Demasiados intentos. Espere {seconds} segundos.",
        "login.expired": "Su sesión terminó. Inicie sesión de nuevo.",
        "password.title": "Cambiar contraseña",
        "password.current": "Contraseña actual",
        "password.new": "Contraseña nueva",
        "password.submit": "Cambiar contraseña",
        "password.changed": "Contraseña cambiada. Las demás sesiones se cerraron.",
        "password.wrong": "La contraseña actual no es correcta.",
        "recent.title": "Lo más reciente",
        "recent.empty": "Aún no hay fotos ni videos. Conecte una tarjeta o cámara.",
        "recent.live": "Se actualiza solo mientras se importa.",
        "archive.title": "Archivo",
        "archive.empty": "El archivo está vacío.",
        "archive.items": "{count} elementos",
        "archive.items.one": "1 elemento",
        "folder.unsorted": "Sin actividad",
        "grid.more": "Más",
        "grid.previous": "Anteriores",
        "grid.next": "Siguientes",
        "grid.pending": "Miniatura en preparación",
        "grid.page": "Página {page} de {pages}",
        "item.title": "Elemento",
        "item.previous": "Anterior",
        "item.next": "Siguiente",
        "item.captured": "Fecha de captura",
        "item.imported": "Importado",
        "item.camera": "Cámara",
        "item.place": "Lugar",
        "item.coordinates": "Coordenadas",
        "item.open_map": "Abrir en el mapa",
        "item.size": "Tamaño",
        "item.dimensions": "Dimensiones",
        "item.duration": "Duración",
        "item.activity": "Actividad",
        "item.file": "Archivo original",
        "item.download": "Descargar original",
        "item.problems": "Avisos",
        "item.no_preview": "Vista previa en preparación",
        "item.sha256": "Huella SHA-256",
        "problem.damaged": "Archivo dañado",
        "problem.implausible_date": "Fecha dudosa",
        "search.title": "Buscar",
        "search.q": "Texto",
        "search.q_hint": "pie de foto, actividad, etiquetas, nombre de archivo",
        "search.date_from": "Desde",
        "search.date_to": "Hasta",
        "search.kind": "Tipo",
        "search.camera": "Cámara",
        "search.area": "Área",
        "search.status": "Estado",
        "search.any": "Cualquiera",
        "search.status.ok": "Sin avisos",
        "search.status.problems": "Con avisos",
        "search.submit": "Buscar",
        "search.results": "{count} resultados",
        "search.results.one": "1 resultado",
        "search.none": "Sin resultados.",
        "status.title": "Estado del equipo",
        "status.devices": "Dispositivos",
        "status.no_devices": "Nada conectado.",
        "status.jobs": "Miniaturas y copias",
        "status.jobs_pending": "{count} pendientes",
        "status.jobs_idle": "Al día",
        "status.disk": "Disco",
        "status.disk_free": "{free} libres de {total}",
        "status.sync": "Central",
        "status.sync.not_configured": "Sin configurar",
        "status.record": "Grabar",
        "status.stop": "Detener",
        "device.detected": "Detectado",
        "device.mounting": "Montando",
        "device.importing": "Importando",
        "device.done": "Terminado",
        "device.safe_to_remove": "Listo para retirar",
        "device.removed_early": "Retirado antes de terminar",
        "device.error": "Error",
        "device.ready": "Listo",
        "device.recording": "Grabando",
        "device.removed": "Retirado",
        "device.progress": "{verified} de {total}",
        "users.title": "Usuarios",
        "users.name": "Usuario",
        "users.role": "Rol",
        "users.created": "Alta",
        "users.add": "Agregar usuario",
        "users.password": "Contraseña inicial",
        "users.remove": "Eliminar",
        "users.disable": "Desactivar",
        "users.enable": "Activar",
        "users.disabled": "Desactivado",
        "users.added": "Usuario {name} creado.",
        "error.title": "Error",
        "error.400": "Solicitud no válida.",
        "error.403": "Su rol no permite esta acción.",
        "error.404": "No se encontró.",
        "error.405": "Método no permitido.",
        "error.409": "La acción no es posible en este momento.",
        "error.413": "La solicitud es demasiado grande.",
        "error.429": "Demasiadas solicitudes. Espere un momento.",
        "error.500": "Error interno. Quedó registrado en el equipo.",
        "error.csrf": "La página caducó. Recárguela e intente de nuevo.",
        "error.host": "Nombre de equipo no permitido.",
        "error.back": "Volver al inicio",
        "footer.kit": "Equipo {name}",
    },
    "en": {
        "app.title": "Acopio",
        "nav.recent": "Latest",
        "nav.archive": "Archive",
        "nav.search": "Search",
        "nav.status": "Status",
        "nav.users": "Users",
        "nav.account": "My account",
        "nav.logout": "Log out",
        "nav.language": "Language",
        "lang.es-MX": "Español (México)",
        "lang.en": "English",
        "role.director": "Director",
        "role.photographer": "Photography",
        "role.social": "Social media and video",
        "role.designer": "Design",
        "role.assistant": "Assistant",
        "kind.photo": "Photo",
        "kind.raw": "RAW",
        "kind.video": "Video",
        "kind.audio": "Audio",
        "kind.other": "Other",
        "setup.title": "First start",
        "setup.intro": "Type the setup code shown on the box's console (or in its log) to "
                       "create the director's account.",
        "setup.code": "Setup code",
        "setup.submit": "Create the director's account",
        "setup.done": "An account already exists. Log in.",
        "setup.bad_code": "The code is not valid or was already used.",
        "login.title": "Log in",
        "login.username": "User name",
        "login.password": "Password",
        "login.submit": "Log in",
        "login.failed": "Wrong user name or password.",
        "login.throttled": "Too many attempts. Wait {seconds} seconds.",
        "login.expired": "Your session ended. Log in again.",
        "password.title": "Change password",
        "password.current": "Current password",
        "password.new": "New password",
        "password.submit": "Change password",
        "password.changed": "Password changed. Your other sessions were closed.",
        "password.wrong": "The current password is not correct.",
        "recent.title": "Latest",
        "recent.empty": "No photos or videos yet. Plug in a card or a camera.",
        "recent.live": "Updates by itself while importing.",
        "archive.title": "Archive",
        "archive.empty": "The archive is empty.",
        "archive.items": "{count} items",
        "archive.items.one": "1 item",
        "folder.unsorted": "No activity",
        "grid.more": "More",
        "grid.previous": "Previous",
        "grid.next": "Next",
        "grid.pending": "Thumbnail on its way",
        "grid.page": "Page {page} of {pages}",
        "item.title": "Item",
        "item.previous": "Previous",
        "item.next": "Next",
        "item.captured": "Captured",
        "item.imported": "Imported",
        "item.camera": "Camera",
        "item.place": "Place",
        "item.coordinates": "Coordinates",
        "item.open_map": "Open in maps",
        "item.size": "Size",
        "item.dimensions": "Dimensions",
        "item.duration": "Duration",
        "item.activity": "Activity",
        "item.file": "Original file",
        "item.download": "Download original",
        "item.problems": "Warnings",
        "item.no_preview": "Preview on its way",
        "item.sha256": "SHA-256 fingerprint",
        "problem.damaged": "Damaged file",
        "problem.implausible_date": "Doubtful date",
        "search.title": "Search",
        "search.q": "Text",
        "search.q_hint": "caption, activity, tags, file name",
        "search.date_from": "From",
        "search.date_to": "To",
        "search.kind": "Kind",
        "search.camera": "Camera",
        "search.area": "Area",
        "search.status": "Status",
        "search.any": "Any",
        "search.status.ok": "No warnings",
        "search.status.problems": "With warnings",
        "search.submit": "Search",
        "search.results": "{count} results",
        "search.results.one": "1 result",
        "search.none": "No results.",
        "status.title": "Box status",
        "status.devices": "Devices",
        "status.no_devices": "Nothing plugged in.",
        "status.jobs": "Thumbnails and copies",
        "status.jobs_pending": "{count} pending",
        "status.jobs_idle": "Up to date",
        "status.disk": "Disk",
        "status.disk_free": "{free} free of {total}",
        "status.sync": "Headquarters",
        "status.sync.not_configured": "Not configured",
        "status.record": "Record",
        "status.stop": "Stop",
        "device.detected": "Detected",
        "device.mounting": "Mounting",
        "device.importing": "Importing",
        "device.done": "Done",
        "device.safe_to_remove": "Safe to remove",
        "device.removed_early": "Removed before finishing",
        "device.error": "Error",
        "device.ready": "Ready",
        "device.recording": "Recording",
        "device.removed": "Removed",
        "device.progress": "{verified} of {total}",
        "users.title": "Users",
        "users.name": "User name",
        "users.role": "Role",
        "users.created": "Created",
        "users.add": "Add user",
        "users.password": "Initial password",
        "users.remove": "Remove",
        "users.disable": "Disable",
        "users.enable": "Enable",
        "users.disabled": "Disabled",
        "users.added": "User {name} created.",
        "error.title": "Error",
        "error.400": "Invalid request.",
        "error.403": "Your role does not allow this.",
        "error.404": "Not found.",
        "error.405": "Method not allowed.",
        "error.409": "That is not possible right now.",
        "error.413": "The request is too large.",
        "error.429": "Too many requests. Wait a moment.",
        "error.500": "Internal error. It was logged on the box.",
        "error.csrf": "The page expired. Reload it and try again.",
        "error.host": "Host name not allowed.",
        "error.back": "Back to the start",
        "footer.kit": "Kit {name}",
    },
}


class Translator:
    """What a template needs for one request: `t("key", n=3)`, dates, numbers, sizes."""

    def __init__(self, language: str, zone: ZoneInfo) -> None:
        self.language = language if language in LANGUAGES else LANGUAGES[0]
        self.locale = BABEL_LOCALE[self.language]
        self.zone = zone
        self.messages = MESSAGES[self.language]

    def __call__(self, key: str, **values: object) -> str:
        text = self.messages.get(key)
        if text is None:  # a missing key shows itself rather than a blank (and a test fails)
            return key
        if values:
            formatted = {k: self.number(v) if isinstance(v, int) else v
                         for k, v in values.items()}
            return text.format(**formatted)
        return text

    def count(self, key: str, count: int) -> str:
        """"1 elemento" but "3 elementos": `key.one` when the count is one."""
        if count == 1 and f"{key}.one" in self.messages:
            return self.messages[f"{key}.one"]
        return self(key, count=count)

    def datetime(self, value: str | datetime | None, fmt: str = "medium") -> str:
        if not value:
            return ""
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        return babel_dates.format_datetime(moment, fmt, tzinfo=self.zone, locale=self.locale)

    def date(self, value: str | datetime | None, fmt: str = "long") -> str:
        if not value:
            return ""
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        if moment.tzinfo:
            moment = moment.astimezone(self.zone)
        return babel_dates.format_date(moment.date(), fmt, locale=self.locale)

    def month(self, month: str) -> str:
        """"2026-05" -> "mayo de 2026"."""
        year, number = int(month[:4]), int(month[5:7])
        return babel_dates.format_date(datetime(year, number, 1).date(), "LLLL 'de' y"
                                       if self.language == "es-MX" else "LLLL y",
                                       locale=self.locale)

    def number(self, value: float, pattern: str | None = None) -> str:
        """In the locale; `pattern` (Babel's, "0.#####") when 3 decimals are not enough."""
        return babel_numbers.format_decimal(value, pattern, locale=self.locale)

    def size(self, n_bytes: int | None) -> str:
        if n_bytes is None:
            return ""
        value = float(n_bytes)
        for unit in ("B", "KB", "MB", "GB", "TB"):
            if value < 1000 or unit == "TB":
                pattern = "#,##0" if unit == "B" else "#,##0.#"
                return f"{babel_numbers.format_decimal(value, pattern, locale=self.locale)} {unit}"
            value /= 1000
        raise AssertionError("unreachable")

    def duration(self, seconds: float | None) -> str:
        if seconds is None:
            return ""
        total = round(seconds)
        hours, rest = divmod(total, 3600)
        minutes, secs = divmod(rest, 60)
        return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"

    def messages_for_js(self, prefixes: tuple[str, ...]) -> dict[str, str]:
        """The strings the live-status script needs, passed to it as JSON."""
        return {k: v for k, v in self.messages.items() if k.startswith(prefixes)}
