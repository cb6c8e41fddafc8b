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
        "nav.skip": "Ir al contenido",
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
        "grid.pages": "Páginas",
        "item.title": "Elemento",
        "item.previous": "Anterior",
        "item.next": "Siguiente",
        "item.captured": "Fecha de captura",
        "item.imported": "Importado",
        "item.camera": "Cámara",
        "item.kits": "Enviado por",
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
        "item.evicted": "En la central",
        "item.evicted_hint": "El original se retiró de este equipo para liberar espacio; la "
                             "central lo conserva.",
        "item.fetch_back": "Traer de la central",
        "item.fetch_failed": "No se pudo traer de la central: {reason}",
        "item.fetch.unreachable": "la central no responde (¿hay conexión con la oficina?). "
                                  "Intente de nuevo cuando la haya.",
        "item.fetch.refused": "la central no reconoce este equipo; hay que emparejarlo de "
                              "nuevo (acopio sync pair).",
        "problem.damaged": "Archivo dañado",
        "problem.implausible_date": "Fecha dudosa",
        "problem.unreadable_metadata": "Datos internos ilegibles (la foto o el video están bien)",
        "problem.probe_failed": "No se pudieron leer los datos del archivo",
        "problem.too_large": "Imagen demasiado grande para mostrarla (el original se guardó "
                             "completo)",
        "problem.no_preview": "No se pudo preparar la vista previa",
        "problem.rebuilt": "Registro reconstruido desde el archivo",
        "item.preview_failed": "No se pudo preparar la vista previa de este archivo; el "
                               "original está a salvo.",
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
        "status.jobs_parked": "{count} con error",
        "status.disk": "Disco",
        "status.disk_free": "{free} libres de {total}",
        "status.sync": "Central",
        "status.sync.not_configured": "Sin configurar",
        "status.sync.idle": "Al día",
        "status.sync.sending": "Enviando",
        "status.sync.paused": "En pausa mientras se importa",
        "status.sync.offline": "Sin conexión",
        "status.sync.error": "Con errores",
        "status.sync.stopped": "Servicio detenido",
        "status.sync_pending": "{count} pendientes ({size})",
        "status.sync_pending.one": "1 pendiente ({size})",
        "status.sync.error.unreachable": "La central no responde: se reintenta sola.",
        "status.sync.error.refused": "La central no reconoce este equipo: hay que "
                                     "emparejarlo de nuevo.",
        "status.sync.error.untrusted": "No se pudo confirmar que sea la central (HTTPS): "
                                       "revise sync.ca_file.",
        "status.sync.error.hub": "La central respondió con un error: se reintenta sola.",
        "status.sync.error.originals": "Hay originales que este equipo no puede enviar "
                                       "(faltan o están dañados): vuelva a importar la "
                                       "tarjeta de la que salieron.",
        "status.sync.error.internal": "Falló el envío en este equipo: vea el registro.",
        "status.sync.last_error": "Último error: {message}",
        "status.sync_current": "{name} a {rate}/s",
        "status.kits": "Equipos enlazados",
        "status.kits_none": "Ningún equipo está enlazado todavía. En este servidor, "
                            "«acopio hub pair» da el código para enlazar uno.",
        "status.kit": "Equipo",
        "status.kit_contact": "Último contacto",
        "status.kit_items": "Elementos recibidos",
        "status.kit_awaited": "Originales por recibir",
        "status.kit_uploads": "Envíos en curso",
        "status.kit_paired": "enlazado el {when}",
        "status.kit_revoked": "acceso retirado el {when}",
        "status.kit_never": "Nunca se ha conectado",
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
        "device.progress": "{done} de {total}",
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
        "error.401": "Inicie sesión para continuar.",
        "error.403": "Su rol no permite esta acción.",
        "error.404": "No se encontró.",
        "error.405": "Método no permitido.",
        "error.409": "La acción no es posible en este momento.",
        "error.413": "La solicitud es demasiado grande.",
        "error.416": "El rango pedido no existe en el archivo.",
        "error.429": "Demasiadas solicitudes. Espere un momento.",
        "error.500": "Error interno. Quedó registrado en el equipo.",
        "error.503": "El servicio no está disponible por ahora. Intente en un momento.",
        "error.disk_full": "No se pudo guardar: el disco del equipo está lleno (o no admite "
                           "escritura). Lo ya guardado está a salvo; avise a quien administra "
                           "el equipo.",
        "error.damaged_state": "Un archivo de estado del equipo está dañado y no se puede "
                               "usar. Quien administra el equipo debe ejecutar «acopio check».",
        "error.csrf": "La página caducó. Recárguela e intente de nuevo.",
        "error.not_approved": "Solo los elementos aprobados por Dirección se descargan en "
                              "tamaño web. Falta aprobar: {names}",
        "error.host": "Nombre de equipo no permitido.",
        "error.back": "Volver al inicio",
        "footer.kit": "Equipo {name}",
        "nav.agenda": "Agenda",
        "item.download_web": "Descargar para web (JPEG)",
        "item.tags": "Etiquetas",
        "item.people": "Personas",
        "item.credit": "Crédito",
        "item.saved": "Cambios guardados.",
        "item.approved_ok": "Aprobado.",
        "item.withdrawn_ok": "Aprobación retirada.",
        "item.refiled_ok": "Movido a otra actividad.",
        "edit.title": "Describir y elegir",
        "edit.caption": "Pie de foto",
        "edit.tags": "Etiquetas",
        "edit.people": "Personas",
        "edit.list_hint": "separadas por comas",
        "edit.credit": "Crédito (fotógrafo)",
        "edit.credit_presets": "Créditos de la oficina",
        "edit.place": "Lugar",
        "edit.rights": "Derechos en las copias para web: {rights}",
        "edit.save": "Guardar",
        "edit.saving": "Guardando…",
        "edit.saved": "Guardado.",
        "edit.unsaved": "Hay cambios sin guardar.",
        "edit.failed": "No se guardó: {message}",
        "edit.offline": "sin conexión con el equipo (o no responde). Lo que escribió sigue "
                        "aquí: vuelva a pulsar Guardar cuando haya señal.",
        "edit.logged_out": "su sesión terminó. Lo que escribió sigue aquí: inicie sesión en "
                           "otra pestaña y vuelva a pulsar Guardar.",
        "edit.invalid": "Revise los datos: {detail}",
        "edit.field.caption": "Pie de foto",
        "edit.field.tags": "Etiquetas",
        "edit.field.add_tags": "Etiquetas",
        "edit.field.remove_tags": "Etiquetas",
        "edit.field.people": "Personas",
        "edit.field.credit": "Crédito",
        "edit.field.place": "Lugar",
        "edit.error.not_text": "{field}: se esperaba texto.",
        "edit.error.too_long": "{field}: como máximo {limit} caracteres.",
        "edit.error.bad_pick": "la marca es elegida, descartada o ninguna.",
        "edit.error.bad_rating": "la calificación va de 0 a 5 estrellas.",
        "edit.error.not_list": "{field}: se esperaba una lista de textos.",
        "edit.error.entry_too_long": "{field}: cada uno tiene como máximo {limit} caracteres.",
        "edit.error.too_many": "{field}: como máximo {limit}.",
        "edit.conflict": "Alguien más cambió este elemento mientras usted lo editaba:",
        "edit.conflict_hint": "Sus cambios no se guardaron. Recargue para ver los de la otra "
                              "persona o guarde los suyos encima.",
        "edit.reload": "Recargar",
        "edit.overwrite": "Guardar los míos de todos modos",
        "edit.keys": "Teclado: P elegir · X descartar · U quitar marca · 0–5 estrellas · ← → "
                     "anterior y siguiente · E pie de foto",
        "pick.label": "Selección",
        "pick.picked": "Elegido",
        "pick.rejected": "Descartado",
        "pick.none": "Sin marcar",
        "pick.pick": "Elegir",
        "pick.reject": "Descartar",
        "pick.unpick": "Quitar marca",
        "rating.label": "Estrellas",
        "rating.stars": "{count} estrellas",
        "rating.stars.one": "1 estrella",
        "rating.none": "Sin estrellas",
        "approval.title": "Aprobación",
        "approval.approved_by": "Aprobado por {name} el {when}",
        "approval.withdrawn_by": "Aprobación retirada por {name} el {when}",
        "approval.not_approved": "Sin aprobar",
        "approval.approve": "Aprobar",
        "approval.withdraw": "Retirar aprobación",
        "approval.badge": "Aprobado",
        "approval.changed": "No se aprobó: cambió desde que abrió la página. Revíselo y "
                            "vuelva a aprobar:",
        "approval.changed_n": "{count} no se aprobaron: cambiaron desde que los vio "
                              "(ábralos para revisarlos).",
        "refile.title": "Mover a otra actividad",
        "refile.to": "Actividad",
        "refile.submit": "Mover",
        "refile.choose": "Elija una actividad…",
        "refile.unknown": "Esa actividad no está en la agenda.",
        "refile.failed": "No se pudo mover: {detail}",
        "refile.error.no_activity": "la actividad «{slug}» no está en la agenda.",
        "refile.error.missing_file": "falta el original de {name} en el archivo; avise a "
                                     "quien administra el equipo.",
        "refile.error.already_there": "{name} ya está en esa actividad.",
        "refile.error.busy": "se está moviendo otra cosa en este momento; inténtelo de nuevo "
                             "en unos segundos.",
        "history.title": "Historial de cambios",
        "history.empty": "Sin cambios todavía.",
        "history.action.edit": "editó",
        "history.action.approve": "aprobó",
        "history.action.withdraw": "retiró la aprobación",
        "history.action.refile": "movió de actividad",
        "history.empty_value": "(vacío)",
        "field.caption": "Pie de foto",
        "field.tags": "Etiquetas",
        "field.people": "Personas",
        "field.credit": "Crédito",
        "field.place": "Lugar",
        "field.pick": "Selección",
        "field.rating": "Estrellas",
        "field.activity": "Actividad",
        "field.approved": "Aprobado",
        "conflict.caption": "{by} cambió el pie de foto a «{value}» a las {time}",
        "conflict.tags": "{by} cambió las etiquetas a «{value}» a las {time}",
        "conflict.people": "{by} cambió las personas a «{value}» a las {time}",
        "conflict.credit": "{by} cambió el crédito a «{value}» a las {time}",
        "conflict.place": "{by} cambió el lugar a «{value}» a las {time}",
        "conflict.pick": "{by} cambió la selección a «{value}» a las {time}",
        "conflict.rating": "{by} cambió las estrellas a {value} a las {time}",
        "select.toggle": "Seleccionar",
        "select.done": "Terminar selección",
        "select.item": "Seleccionar {name}",
        "select.count": "{count} seleccionados",
        "select.count.one": "1 seleccionado",
        "select.all": "Toda la página",
        "select.none": "Ninguno",
        "select.describe": "Describir",
        "select.describe_hint": "Solo se aplican los campos que llene.",
        "select.add_tags": "Agregar etiquetas",
        "select.apply": "Aplicar",
        "select.zip_original": "ZIP de originales",
        "select.zip_web": "ZIP para web",
        "select.working": "Trabajando…",
        "select.done_n": "Listo: {count} elementos.",
        "select.done_n.one": "Listo: 1 elemento.",
        "select.changed_meanwhile": "{count} cambiaron mientras tanto (otra persona los "
                                    "editó) y no se tocaron; ábralos para ver sus cambios.",
        "select.failed": "No se pudo: {message}",
        "select.empty": "Seleccione al menos un elemento.",
        "select.keys": "Mayús+clic selecciona un rango; Ctrl+A toda la página; P, X, U y 0–5 "
                       "marcan la selección; Esc termina.",
        "search.pick": "Selección",
        "search.pick.picked": "Elegidos",
        "search.pick.rejected": "Descartados",
        "search.pick.none": "Sin marcar",
        "search.rating_min": "Estrellas (mínimo)",
        "search.approved": "Aprobación",
        "search.approved.yes": "Aprobados",
        "search.approved.no": "Sin aprobar",
        "agenda.title": "Agenda",
        "agenda.empty": "La agenda está vacía.",
        "agenda.current": "Actividad actual",
        "agenda.current_hint": "Lo que se importe y no caiga en el horario de ninguna actividad "
                               "se archiva en la actividad actual.",
        "agenda.current_none": "Ninguna",
        "agenda.set_current": "Fijar como actual",
        "agenda.clear_current": "Quitar actividad actual",
        "agenda.make_current": "Hacer actividad actual",
        "agenda.add": "Agregar actividad",
        "agenda.edit": "Editar actividad",
        "agenda.save": "Guardar cambios",
        "agenda.remove": "Eliminar actividad",
        "agenda.remove_confirm": "¿Eliminar esta actividad de la agenda? Sus elementos se quedan "
                                 "donde están.",
        "agenda.field.title": "Título",
        "agenda.field.area": "Área",
        "agenda.field.place": "Lugar",
        "agenda.field.start": "Inicio",
        "agenda.field.end": "Fin",
        "agenda.field.slug": "Identificador (opcional)",
        "agenda.when": "{start} – {end}",
        "agenda.items": "Elementos de la actividad",
        "agenda.no_items": "Aún no hay elementos en esta actividad.",
        "agenda.invalid": "Revise los datos: {detail}",
        "agenda.readonly": "Solo Dirección y Auxiliar cambian la agenda.",
        "agenda.ok.added": "Actividad agregada.",
        "agenda.ok.saved": "Cambios guardados.",
        "agenda.ok.removed": "Actividad eliminada.",
        "agenda.ok.current": "Actividad actual cambiada.",
        "agenda.unsorted_hint": "Elementos que no están en ninguna actividad de la agenda.",
        "agenda.view": "Ver la actividad",
        # -- reports: results and the printed mural (web/reports.py) --
        "nav.reports": "Informes",
        "reports.month": "Mes",
        "reports.show": "Ver",
        "reports.no_area": "Sin área",
        "reports.area": "Área",
        "reports.activities": "Actividades cubiertas",
        "reports.planned": "Programadas",
        "reports.items": "Elementos",
        "reports.photos": "Fotos",
        "reports.videos": "Videos",
        "reports.audio": "Audio",
        "reports.approved": "Aprobados",
        "reports.total": "Total",
        "reports.results.title": "Informe de resultados",
        "reports.results.pdf": "Descargar PDF",
        "reports.results.empty": "Este mes no tiene elementos ni actividades en la agenda.",
        "reports.results.summary": "{activities} de {planned} actividades programadas cubiertas "
                                   "· Fotos: {photos} · Videos: {videos} · Audio: {audio} · "
                                   "Aprobados: {approved}",
        "reports.results.covered": "{activities} de {planned}",
        "reports.results.chart_media": "Fotos, videos, audio y aprobados por área",
        "reports.results.chart_activities": "Actividades cubiertas y programadas por área",
        "reports.results.detail": "Por actividad",
        "reports.mural.title": "Mural impreso",
        "reports.mural.size": "Tamaño",
        "reports.mural.make": "Preparar el mural",
        "reports.mural.hint": "Un cartel para imprimir a 150 ppp o más con las actividades del "
                              "mes por área y sus mejores fotos aprobadas con su pie de foto. "
                              "Prepararlo tarda unos segundos; después se descarga al momento.",
        "reports.mural.no_photos": "No hay fotos aprobadas en {month}: Dirección aprueba las "
                                   "fotos que se pueden imprimir.",
        "reports.mural.summary": "{activities} actividades y {photos} de {approved} fotos "
                                 "aprobadas en {pages} hojas {paper} a {dpi} ppp.",
        "reports.mural.summary.one": "{activities} actividades y {photos} de {approved} "
                                     "fotos aprobadas en 1 hoja {paper} a {dpi} ppp.",
        "reports.mural.pdf": "Descargar PDF para imprimir",
        "reports.mural.png": "Descargar vista previa (PNG)",
        "reports.mural.preview": "Vista previa del mural",
        "reports.mural.omitted": "Por espacio quedaron fuera {count} fotos aprobadas: cada "
                                 "actividad muestra sus {per} mejores.",
        "reports.mural.shortened": "Textos recortados con «…» para caber, o impresos sin "
                                   "algún carácter (corrija el pie de foto si hace falta):",
        "reports.mural.dropped": "(se imprimió sin {chars}: la letra del mural no lo tiene)",
        "reports.mural.unavailable": "Estas fotos no se pudieron dibujar (archivo ausente o "
                                     "dañado); en su lugar hay un recuadro gris:",
        "reports.mural.open": "Mural impreso",
        # -- the kiosk screen (/mural) and its settings (web/kiosk.py) --
        "nav.kiosk": "Pantalla del mural",
        "kiosk.screen_title": "Mural de actividades",
        "kiosk.empty": "Aquí aparecerán las fotos y los videos aprobados de las actividades.",
        "kiosk.range": "{start} – {end}",
        "kiosk.title": "Pantalla del mural",
        "kiosk.intro": "La pantalla junto al mural se ve sin iniciar sesión y muestra solo lo "
                       "aprobado por Dirección. Toma cada cambio por sí sola en unos segundos.",
        "kiosk.open": "Ver la pantalla",
        "kiosk.saved": "Ajustes guardados. La pantalla los toma en unos segundos.",
        "kiosk.save": "Guardar",
        "kiosk.invalid": "Revise «{field}»: {detail}",
        "kiosk.section.content": "Qué se muestra",
        "kiosk.section.look": "Presentación",
        "kiosk.field.period": "Periodo",
        "kiosk.period.current": "El mes en curso",
        "kiosk.period.month": "Un mes",
        "kiosk.period.range": "Un rango de fechas de captura",
        "kiosk.field.month": "Mes",
        "kiosk.field.date_from": "Desde",
        "kiosk.field.date_to": "Hasta",
        "kiosk.field.areas": "Áreas",
        "kiosk.areas_hint": "Si no marca ninguna, se muestran todas.",
        "kiosk.areas_none": "La agenda aún no tiene áreas.",
        "kiosk.field.interval_s": "Segundos por pantalla",
        "kiosk.field.layout": "Composición",
        "kiosk.layout.collage": "Collage: una foto grande y varias chicas",
        "kiosk.layout.grid": "Cuadrícula: hasta seis fotos",
        "kiosk.layout.single": "Una por una",
        "kiosk.field.background": "Color de fondo",
        "kiosk.field.text": "Color del texto",
        "kiosk.field.accent": "Color de acento",
        "kiosk.field.ticker": "Mensajes de la cinta",
        "kiosk.ticker_hint": "Uno por renglón: hasta {count} mensajes de {chars} caracteres.",
        "kiosk.field.logo": "Logotipo",
        "kiosk.logo_hint": "Imagen PNG o JPEG de menos de 1 MB.",
        "kiosk.logo_current": "Logotipo actual",
        "kiosk.logo_remove": "Quitar el logotipo",
        "kiosk.error.period": "elija un periodo de la lista.",
        "kiosk.error.month": "escriba el mes como AAAA-MM.",
        "kiosk.error.date": "escriba las dos fechas como AAAA-MM-DD.",
        "kiosk.error.range_order": "la fecha final es anterior a la inicial.",
        "kiosk.error.areas": "hay demasiadas áreas.",
        "kiosk.error.interval": "escriba un número entero de segundos, de 1 a 3600.",
        "kiosk.error.layout": "elija una composición de la lista.",
        "kiosk.error.colour": "elija un color (#rrggbb).",
        "kiosk.error.ticker": "escriba mensajes de texto.",
        "kiosk.error.ticker_count": "son demasiados mensajes (hasta 10).",
        "kiosk.error.ticker_length": "cada mensaje puede tener hasta 140 caracteres.",
        "kiosk.error.logo": "el logotipo no es válido.",
        "kiosk.error.logo_format": "debe ser una imagen PNG o JPEG completa.",
        "kiosk.error.logo_size": "la imagen es demasiado grande.",
        "kiosk.error.unknown": "ese ajuste no existe.",
        # -- refused account and agenda changes, by the exception's code (error_text) --
        "account.error.name_case": "Los nombres de usuario van en minúsculas: use «{suggested}» "
                                   "en lugar de «{name}».",
        "account.error.name_invalid": "El nombre de usuario «{name}» no es válido: use de 2 a 32 "
                                      "letras minúsculas sin acentos, dígitos, «.», «_» o «-», "
                                      "y empiece con una letra o un dígito.",
        "account.error.role_unknown": "El rol «{role}» no existe.",
        "account.error.password_type": "La contraseña debe ser texto.",
        "account.error.password_short": "La contraseña es demasiado corta: use al menos {min} "
                                        "caracteres.",
        "account.error.password_long": "La contraseña es demasiado larga: use como máximo {max} "
                                       "caracteres.",
        "account.error.password_repeated": "La contraseña es un mismo carácter repetido: elija "
                                           "una contraseña de verdad.",
        "account.error.user_exists": "Ya existe un usuario «{name}».",
        "account.error.user_missing": "No existe el usuario «{name}».",
        "account.error.last_director_remove": "No se puede eliminar a «{name}»: es la última "
                                              "cuenta de Dirección activa. Primero cree otra "
                                              "cuenta de Dirección.",
        "account.error.last_director_demote": "No se puede cambiar el rol de «{name}»: es la "
                                              "última cuenta de Dirección activa. Primero cree "
                                              "otra cuenta de Dirección.",
        "account.error.last_director_disable": "No se puede desactivar a «{name}»: es la última "
                                               "cuenta de Dirección activa. Primero cree otra "
                                               "cuenta de Dirección.",
        "account.error.language_unknown": "El idioma «{language}» no existe.",
        "agenda.error.slug_invalid": "el identificador «{slug}» no es válido: use letras "
                                     "minúsculas sin acentos, dígitos y guiones (hasta 80).",
        "agenda.error.slug_reserved": "el identificador «{slug}» está reservado para los "
                                      "elementos sin actividad.",
        "agenda.error.slug_type": "el identificador debe ser texto.",
        "agenda.error.title_no_slug": "del título «{title}» no sale un identificador: use letras "
                                      "o números en el título, o escriba un identificador.",
        "agenda.error.ends_before_start": "la actividad termina antes de empezar.",
        "agenda.error.exists": "ya existe una actividad con el identificador «{slug}».",
        "agenda.error.no_activity": "la actividad «{slug}» no está en la agenda.",
        "agenda.error.no_title": "la actividad necesita un título.",
        "agenda.error.cannot_change": "no se puede cambiar {fields} de una actividad.",
        "agenda.error.time_invalid": "la fecha y hora «{text}» no es válida: escríbala como "
                                     "2026-05-10T09:00.",
        "agenda.error.time_type": "«{field}» debe ser una fecha y hora.",
        "agenda.error.text_too_long": "«{field}» admite como máximo {limit} caracteres.",
        "agenda.error.missing": "falta {fields}.",
        # -- the status page's job table (status.html) --
        "job.kind.thumb": "Miniaturas",
        "job.kind.preview": "Vistas previas",
        "job.kind.poster": "Portadas de video",
        "job.kind.waveform": "Formas de onda",
        "job.kind.audio_proxy": "Copias de audio",
        "job.kind.video_proxy": "Copias de video",
        "job.state.queued": "En espera",
        "job.state.running": "En proceso",
        "job.state.done": "Hechos",
        "job.state.parked": "Apartados por error",
        "users.remove_confirm": "¿Eliminar al usuario {name}? Sus sesiones se cierran y ya no "
                                "podrá entrar.",
        "item.download_web_pending": "La copia para web se podrá descargar cuando Dirección "
                                     "apruebe este elemento.",
    },
    "en": {
        "app.title": "Acopio",
        "nav.recent": "Latest",
        "nav.skip": "Skip to the content",
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
        "grid.pages": "Pages",
        "item.title": "Item",
        "item.previous": "Previous",
        "item.next": "Next",
        "item.captured": "Captured",
        "item.imported": "Imported",
        "item.camera": "Camera",
        "item.kits": "Sent by",
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
        "item.evicted": "At headquarters",
        "item.evicted_hint": "The original was removed from this kit to free space; "
                             "headquarters keeps it.",
        "item.fetch_back": "Fetch from headquarters",
        "item.fetch_failed": "Could not fetch it from headquarters: {reason}",
        "item.fetch.unreachable": "headquarters does not answer (is there a link to the "
                                  "office?). Try again when there is.",
        "item.fetch.refused": "headquarters does not know this box; pair it again (acopio "
                              "sync pair).",
        "problem.damaged": "Damaged file",
        "problem.implausible_date": "Doubtful date",
        "problem.unreadable_metadata": "Unreadable internal data (the photo or video is fine)",
        "problem.probe_failed": "The file's data could not be read",
        "problem.too_large": "Image too large to show (the original is kept whole)",
        "problem.no_preview": "No preview could be made",
        "problem.rebuilt": "Record rebuilt from the archive",
        "item.preview_failed": "No preview could be made of this file; the original is safe.",
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
        "status.kits": "Paired kits",
        "status.kits_none": "No kit is paired yet. On this server, \"acopio hub pair\" "
                            "gives the code to pair one.",
        "status.kit": "Kit",
        "status.kit_contact": "Last contact",
        "status.kit_items": "Items received",
        "status.kit_awaited": "Originals still to come",
        "status.kit_uploads": "Uploads in progress",
        "status.kit_paired": "paired on {when}",
        "status.kit_revoked": "access revoked on {when}",
        "status.kit_never": "Never connected",
        "status.devices": "Devices",
        "status.no_devices": "Nothing plugged in.",
        "status.jobs": "Thumbnails and copies",
        "status.jobs_pending": "{count} pending",
        "status.jobs_idle": "Up to date",
        "status.jobs_parked": "{count} failed",
        "status.disk": "Disk",
        "status.disk_free": "{free} free of {total}",
        "status.sync": "Headquarters",
        "status.sync.not_configured": "Not configured",
        "status.sync.idle": "Up to date",
        "status.sync.sending": "Sending",
        "status.sync.paused": "Paused while importing",
        "status.sync.offline": "Offline",
        "status.sync.error": "With errors",
        "status.sync.stopped": "Service stopped",
        "status.sync_pending": "{count} pending ({size})",
        "status.sync_pending.one": "1 pending ({size})",
        "status.sync.error.unreachable": "Headquarters does not answer: it retries by itself.",
        "status.sync.error.refused": "Headquarters does not know this box: pair it again.",
        "status.sync.error.untrusted": "Could not confirm it is headquarters (HTTPS): check "
                                       "sync.ca_file.",
        "status.sync.error.hub": "Headquarters answered with an error: it retries by itself.",
        "status.sync.error.originals": "Some originals cannot be sent from this box (missing "
                                       "or damaged): import the card they came from again.",
        "status.sync.error.internal": "Sending failed on this box: see the log.",
        "status.sync.last_error": "Last error: {message}",
        "status.sync_current": "{name} at {rate}/s",
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
        "device.progress": "{done} of {total}",
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
        "error.401": "Sign in to continue.",
        "error.403": "Your role does not allow this.",
        "error.404": "Not found.",
        "error.405": "Method not allowed.",
        "error.409": "That is not possible right now.",
        "error.413": "The request is too large.",
        "error.416": "The requested range is not in the file.",
        "error.429": "Too many requests. Wait a moment.",
        "error.500": "Internal error. It was logged on the box.",
        "error.503": "The service is not available right now. Try again in a moment.",
        "error.disk_full": "Could not save: the box's disk is full (or takes no writes). "
                           "What was saved is safe; tell whoever runs the box.",
        "error.damaged_state": "One of the box's state files is damaged and cannot be used. "
                               "Whoever runs the box should run \"acopio check\".",
        "error.csrf": "The page expired. Reload it and try again.",
        "error.not_approved": "Only items approved by the director download at web size. "
                              "Not approved yet: {names}",
        "error.host": "Host name not allowed.",
        "error.back": "Back to the start",
        "footer.kit": "Kit {name}",
        "nav.agenda": "Agenda",
        "item.download_web": "Download web size (JPEG)",
        "item.tags": "Tags",
        "item.people": "People",
        "item.credit": "Credit",
        "item.saved": "Changes saved.",
        "item.approved_ok": "Approved.",
        "item.withdrawn_ok": "Approval withdrawn.",
        "item.refiled_ok": "Moved to another activity.",
        "edit.title": "Describe and pick",
        "edit.caption": "Caption",
        "edit.tags": "Tags",
        "edit.people": "People",
        "edit.list_hint": "comma-separated",
        "edit.credit": "Credit (photographer)",
        "edit.credit_presets": "Office credits",
        "edit.place": "Place",
        "edit.rights": "Rights in web-size copies: {rights}",
        "edit.save": "Save",
        "edit.saving": "Saving…",
        "edit.saved": "Saved.",
        "edit.unsaved": "There are unsaved changes.",
        "edit.failed": "Not saved: {message}",
        "edit.offline": "no connection with the box (or it does not answer). What you "
                        "typed is still here: press Save again when there is signal.",
        "edit.logged_out": "your session ended. What you typed is still here: log in in "
                           "another tab and press Save again.",
        "edit.invalid": "Check the details: {detail}",
        "edit.field.caption": "Caption",
        "edit.field.tags": "Tags",
        "edit.field.add_tags": "Tags",
        "edit.field.remove_tags": "Tags",
        "edit.field.people": "People",
        "edit.field.credit": "Credit",
        "edit.field.place": "Place",
        "edit.error.not_text": "{field}: text expected.",
        "edit.error.too_long": "{field}: at most {limit} characters.",
        "edit.error.bad_pick": "the mark is picked, rejected or none.",
        "edit.error.bad_rating": "the rating goes from 0 to 5 stars.",
        "edit.error.not_list": "{field}: a list of texts expected.",
        "edit.error.entry_too_long": "{field}: each at most {limit} characters.",
        "edit.error.too_many": "{field}: at most {limit}.",
        "edit.conflict": "Someone else changed this item while you were editing it:",
        "edit.conflict_hint": "Your changes were not saved. Reload to see theirs, or save yours "
                              "over them.",
        "edit.reload": "Reload",
        "edit.overwrite": "Save mine anyway",
        "edit.keys": "Keyboard: P pick · X reject · U unmark · 0–5 stars · ← → previous and next "
                     "· E caption",
        "pick.label": "Pick",
        "pick.picked": "Picked",
        "pick.rejected": "Rejected",
        "pick.none": "Unmarked",
        "pick.pick": "Pick",
        "pick.reject": "Reject",
        "pick.unpick": "Unmark",
        "rating.label": "Stars",
        "rating.stars": "{count} stars",
        "rating.stars.one": "1 star",
        "rating.none": "No stars",
        "approval.title": "Approval",
        "approval.approved_by": "Approved by {name} on {when}",
        "approval.withdrawn_by": "Approval withdrawn by {name} on {when}",
        "approval.not_approved": "Not approved",
        "approval.approve": "Approve",
        "approval.withdraw": "Withdraw approval",
        "approval.badge": "Approved",
        "approval.changed": "Not approved: it changed since you opened the page. Review it "
                            "and approve again:",
        "approval.changed_n": "{count} were not approved: they changed since you saw them "
                              "(open them to review).",
        "refile.title": "Move to another activity",
        "refile.to": "Activity",
        "refile.submit": "Move",
        "refile.choose": "Choose an activity…",
        "refile.unknown": "That activity is not in the agenda.",
        "refile.failed": "Could not move: {detail}",
        "refile.error.no_activity": "the activity “{slug}” is not in the agenda.",
        "refile.error.missing_file": "the original of {name} is missing from the archive; "
                                     "tell whoever runs the box.",
        "refile.error.already_there": "{name} is already in that activity.",
        "refile.error.busy": "something else is being moved right now; try again in a few "
                             "seconds.",
        "history.title": "History of changes",
        "history.empty": "No changes yet.",
        "history.action.edit": "edited",
        "history.action.approve": "approved",
        "history.action.withdraw": "withdrew the approval",
        "history.action.refile": "moved to another activity",
        "history.empty_value": "(empty)",
        "field.caption": "Caption",
        "field.tags": "Tags",
        "field.people": "People",
        "field.credit": "Credit",
        "field.place": "Place",
        "field.pick": "Pick",
        "field.rating": "Stars",
        "field.activity": "Activity",
        "field.approved": "Approved",
        "conflict.caption": "{by} changed the caption to “{value}” at {time}",
        "conflict.tags": "{by} changed the tags to “{value}” at {time}",
        "conflict.people": "{by} changed the people to “{value}” at {time}",
        "conflict.credit": "{by} changed the credit to “{value}” at {time}",
        "conflict.place": "{by} changed the place to “{value}” at {time}",
        "conflict.pick": "{by} changed the pick to “{value}” at {time}",
        "conflict.rating": "{by} changed the stars to {value} at {time}",
        "select.toggle": "Select",
        "select.done": "Done selecting",
        "select.item": "Select {name}",
        "select.count": "{count} selected",
        "select.count.one": "1 selected",
        "select.all": "Whole page",
        "select.none": "None",
        "select.describe": "Describe",
        "select.describe_hint": "Only the fields you fill in are applied.",
        "select.add_tags": "Add tags",
        "select.apply": "Apply",
        "select.zip_original": "ZIP of originals",
        "select.zip_web": "ZIP web size",
        "select.working": "Working…",
        "select.done_n": "Done: {count} items.",
        "select.done_n.one": "Done: 1 item.",
        "select.changed_meanwhile": "{count} changed meanwhile (someone else edited them) "
                                    "and were left alone; open them to see their changes.",
        "select.failed": "Failed: {message}",
        "select.empty": "Select at least one item.",
        "select.keys": "Shift+click selects a range; Ctrl+A the whole page; P, X, U and 0–5 "
                       "mark the selection; Esc ends.",
        "search.pick": "Pick",
        "search.pick.picked": "Picked",
        "search.pick.rejected": "Rejected",
        "search.pick.none": "Unmarked",
        "search.rating_min": "Stars (at least)",
        "search.approved": "Approval",
        "search.approved.yes": "Approved",
        "search.approved.no": "Not approved",
        "agenda.title": "Agenda",
        "agenda.empty": "The agenda is empty.",
        "agenda.current": "Current activity",
        "agenda.current_hint": "Whatever is imported outside every activity's time window is "
                               "filed in the current activity.",
        "agenda.current_none": "None",
        "agenda.set_current": "Set as current",
        "agenda.clear_current": "Clear the current activity",
        "agenda.make_current": "Make it the current activity",
        "agenda.add": "Add activity",
        "agenda.edit": "Edit activity",
        "agenda.save": "Save changes",
        "agenda.remove": "Remove activity",
        "agenda.remove_confirm": "Remove this activity from the agenda? Its items stay where they "
                                 "are.",
        "agenda.field.title": "Title",
        "agenda.field.area": "Area",
        "agenda.field.place": "Place",
        "agenda.field.start": "Start",
        "agenda.field.end": "End",
        "agenda.field.slug": "Identifier (optional)",
        "agenda.when": "{start} – {end}",
        "agenda.items": "Items of the activity",
        "agenda.no_items": "No items in this activity yet.",
        "agenda.invalid": "Check the details: {detail}",
        "agenda.readonly": "Only the director and assistants change the agenda.",
        "agenda.ok.added": "Activity added.",
        "agenda.ok.saved": "Changes saved.",
        "agenda.ok.removed": "Activity removed.",
        "agenda.ok.current": "Current activity changed.",
        "agenda.unsorted_hint": "Items that are in no activity of the agenda.",
        "agenda.view": "See the activity",
        # -- reports: results and the printed mural (web/reports.py) --
        "nav.reports": "Reports",
        "reports.month": "Month",
        "reports.show": "Show",
        "reports.no_area": "No area",
        "reports.area": "Area",
        "reports.activities": "Activities covered",
        "reports.planned": "Planned",
        "reports.items": "Items",
        "reports.photos": "Photos",
        "reports.videos": "Videos",
        "reports.audio": "Audio",
        "reports.approved": "Approved",
        "reports.total": "Total",
        "reports.results.title": "Results report",
        "reports.results.pdf": "Download PDF",
        "reports.results.empty": "This month has no items and no activities in the agenda.",
        "reports.results.summary": "{activities} of {planned} planned activities covered · "
                                   "Photos: {photos} · Videos: {videos} · Audio: {audio} · "
                                   "Approved: {approved}",
        "reports.results.covered": "{activities} of {planned}",
        "reports.results.chart_media": "Photos, videos, audio and approved items by area",
        "reports.results.chart_activities": "Activities covered and planned by area",
        "reports.results.detail": "By activity",
        "reports.mural.title": "Printed mural",
        "reports.mural.size": "Size",
        "reports.mural.make": "Prepare the mural",
        "reports.mural.hint": "A poster to print at 150 dpi or more with the month's "
                              "activities by area and their best approved photos with "
                              "captions. Preparing it takes a few seconds; then it downloads "
                              "at once.",
        "reports.mural.no_photos": "There are no approved photos in {month}: the director "
                                   "approves the photos that may be printed.",
        "reports.mural.summary": "{activities} activities and {photos} of {approved} approved "
                                 "photos on {pages} {paper} sheets at {dpi} dpi.",
        "reports.mural.summary.one": "{activities} activities and {photos} of {approved} "
                                     "approved photos on 1 {paper} sheet at {dpi} dpi.",
        "reports.mural.pdf": "Download the PDF to print",
        "reports.mural.png": "Download the preview (PNG)",
        "reports.mural.preview": "Preview of the mural",
        "reports.mural.omitted": "{count} approved photos were left out for room: each "
                                 "activity shows its best {per}.",
        "reports.mural.shortened": "Texts shortened with \"…\" to fit, or printed without "
                                   "some character (fix the caption if needed):",
        "reports.mural.dropped": "(printed without {chars}: the mural's type lacks it)",
        "reports.mural.unavailable": "These photos could not be drawn (file missing or "
                                     "damaged); a grey box stands in for them:",
        "reports.mural.open": "Printed mural",
        # -- the kiosk screen (/mural) and its settings (web/kiosk.py) --
        "nav.kiosk": "Mural screen",
        "kiosk.screen_title": "Activities mural",
        "kiosk.empty": "Approved photos and videos of the activities will appear here.",
        "kiosk.range": "{start} – {end}",
        "kiosk.title": "Mural screen",
        "kiosk.intro": "The screen beside the mural needs no login and shows only what the "
                       "director approved. It follows every change by itself within seconds.",
        "kiosk.open": "See the screen",
        "kiosk.saved": "Settings saved. The screen takes them within seconds.",
        "kiosk.save": "Save",
        "kiosk.invalid": "Check “{field}”: {detail}",
        "kiosk.section.content": "What is shown",
        "kiosk.section.look": "Presentation",
        "kiosk.field.period": "Period",
        "kiosk.period.current": "The current month",
        "kiosk.period.month": "A month",
        "kiosk.period.range": "A range of capture dates",
        "kiosk.field.month": "Month",
        "kiosk.field.date_from": "From",
        "kiosk.field.date_to": "To",
        "kiosk.field.areas": "Areas",
        "kiosk.areas_hint": "With none ticked, every area is shown.",
        "kiosk.areas_none": "The agenda has no areas yet.",
        "kiosk.field.interval_s": "Seconds per screen",
        "kiosk.field.layout": "Layout",
        "kiosk.layout.collage": "Collage: one large photo and several small ones",
        "kiosk.layout.grid": "Grid: up to six photos",
        "kiosk.layout.single": "One at a time",
        "kiosk.field.background": "Background colour",
        "kiosk.field.text": "Text colour",
        "kiosk.field.accent": "Accent colour",
        "kiosk.field.ticker": "Ticker messages",
        "kiosk.ticker_hint": "One per line: up to {count} messages of {chars} characters.",
        "kiosk.field.logo": "Logo",
        "kiosk.logo_hint": "A PNG or JPEG image under 1 MB.",
        "kiosk.logo_current": "Current logo",
        "kiosk.logo_remove": "Remove the logo",
        "kiosk.error.period": "choose a period from the list.",
        "kiosk.error.month": "write the month as YYYY-MM.",
        "kiosk.error.date": "write both dates as YYYY-MM-DD.",
        "kiosk.error.range_order": "the end date is before the start date.",
        "kiosk.error.areas": "too many areas.",
        "kiosk.error.interval": "write a whole number of seconds, from 1 to 3600.",
        "kiosk.error.layout": "choose a layout from the list.",
        "kiosk.error.colour": "choose a colour (#rrggbb).",
        "kiosk.error.ticker": "write text messages.",
        "kiosk.error.ticker_count": "too many messages (up to 10).",
        "kiosk.error.ticker_length": "each message may have up to 140 characters.",
        "kiosk.error.logo": "the logo is not valid.",
        "kiosk.error.logo_format": "it must be a whole PNG or JPEG image.",
        "kiosk.error.logo_size": "the image is too large.",
        "kiosk.error.unknown": "no such setting.",
        # -- refused account and agenda changes, by the exception's code (error_text) --
        "account.error.name_case": "User names are lower case: use “{suggested}” instead of "
                                   "“{name}”.",
        "account.error.name_invalid": "The user name “{name}” is not valid: use 2 to 32 "
                                      "lower-case letters without accents, digits, “.”, “_” "
                                      "or “-”, starting with a letter or digit.",
        "account.error.role_unknown": "There is no role “{role}”.",
        "account.error.password_type": "The password must be text.",
        "account.error.password_short": "The password is too short: use at least {min} "
                                        "characters.",
        "account.error.password_long": "The password is too long: use at most {max} "
                                       "characters.",
        "account.error.password_repeated": "The password is one character repeated: choose a "
                                           "real password.",
        "account.error.user_exists": "A user “{name}” already exists.",
        "account.error.user_missing": "There is no user “{name}”.",
        "account.error.last_director_remove": "“{name}” cannot be removed: it is the last "
                                              "enabled director. Make another director first.",
        "account.error.last_director_demote": "The role of “{name}” cannot change: it is the "
                                              "last enabled director. Make another director "
                                              "first.",
        "account.error.last_director_disable": "“{name}” cannot be disabled: it is the last "
                                               "enabled director. Make another director first.",
        "account.error.language_unknown": "There is no language “{language}”.",
        "agenda.error.slug_invalid": "the identifier “{slug}” is not valid: use lower-case "
                                     "letters without accents, digits and hyphens (at most 80).",
        "agenda.error.slug_reserved": "the identifier “{slug}” is reserved for items in no "
                                      "activity.",
        "agenda.error.slug_type": "the identifier must be text.",
        "agenda.error.title_no_slug": "no identifier can be made from the title “{title}”: use "
                                      "letters or digits in the title, or type an identifier.",
        "agenda.error.ends_before_start": "the activity ends before it starts.",
        "agenda.error.exists": "an activity with the identifier “{slug}” already exists.",
        "agenda.error.no_activity": "the activity “{slug}” is not in the agenda.",
        "agenda.error.no_title": "the activity needs a title.",
        "agenda.error.cannot_change": "{fields} of an activity cannot change.",
        "agenda.error.time_invalid": "the date and time “{text}” is not valid: write it as "
                                     "2026-05-10T09:00.",
        "agenda.error.time_type": "“{field}” must be a date and time.",
        "agenda.error.text_too_long": "“{field}” takes at most {limit} characters.",
        "agenda.error.missing": "{fields} missing.",
        # -- the status page's job table (status.html) --
        "job.kind.thumb": "Thumbnails",
        "job.kind.preview": "Previews",
        "job.kind.poster": "Video posters",
        "job.kind.waveform": "Waveforms",
        "job.kind.audio_proxy": "Audio copies",
        "job.kind.video_proxy": "Video copies",
        "job.state.queued": "Waiting",
        "job.state.running": "Running",
        "job.state.done": "Done",
        "job.state.parked": "Set aside after errors",
        "users.remove_confirm": "Remove the user {name}? Their sessions end and they can no "
                                "longer log in.",
        "item.download_web_pending": "The web-size copy can be downloaded once the director "
                                     "approves this item.",
    },
}


# A code whose message the catalogue already has under another name.
ERROR_KEYS = {
    ("account", "setup_wrong_code"): "setup.bad_code",
    ("account", "setup_not_pending"): "setup.done",
    ("account", "current_password_wrong"): "password.wrong",
}


def error_text(t: Translator, family: str, exc: Exception) -> str:
    """A refused operation's message in the screen's language. The core's exceptions
    (accounts.AccountError, agenda.AgendaError) carry a stable `code` and the `values` the
    message needs; the message is `FAMILY.error.CODE` (or ERROR_KEYS), and a value named
    `field` or `fields` is shown as the form labels it (`FAMILY.field.NAME`). An exception
    whose code the catalogue does not know keeps its own (English) text."""
    code = getattr(exc, "code", "") or ""
    key = ERROR_KEYS.get((family, code), f"{family}.error.{code}")
    if not code or key not in t.messages:
        return str(exc)

    def label(name: object) -> str:
        found = t.messages.get(f"{family}.field.{name}")
        return found if found is not None else str(name)

    values: dict[str, object] = {}
    for name, value in (getattr(exc, "values", None) or {}).items():
        if name == "field":
            value = label(value)
        elif name == "fields":
            value = ", ".join(label(v) for v in value)
        values[name] = value
    return t(key, **values)


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

    def time(self, value: str | datetime | None, fmt: str = "short") -> str:
        """"10:42": the time of day in the kit's zone ("a las 10:42")."""
        if not value:
            return ""
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        return babel_dates.format_time(moment, fmt, tzinfo=self.zone, locale=self.locale)

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
