"""The DICOM nodes of each organisation: PACS and modalities that send instances to Pulmo's
Storage SCP (``source``), receive the results of its analyses (``destination``), or both.

A source is recognised by the *calling AE title* of the association it opens: an AE title may
name only one source node across all organisations (the instances it sends belong to that
node's organisation), and its associations must come from the node's host (the address it
resolves to) unless the listener is told otherwise (``check_address=False``).
"""

from __future__ import annotations

import ipaddress
import re
import socket

from sqlalchemy import select
from sqlalchemy.orm import Session

from pulmo.web.models import NODE_ROLES, DicomNode, User
from pulmo.web.services import accounts, audit

SOURCE_ROLES = ("source", "both")
DESTINATION_ROLES = ("destination", "both")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9\-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9\-]{0,62}))*\.?$")


class NodeError(ValueError):
    """A node that cannot be registered; ``status``: the HTTP status to answer."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def check_ae_title(value) -> str:
    """The AE title with its insignificant leading/trailing spaces removed, or NodeError: 1 to 16
    printable ASCII characters, no backslash (DICOM PS3.5 AE)."""
    if not isinstance(value, str):
        raise NodeError("ae_title must be a string of 1 to 16 characters")
    title = value.strip(" ")
    if not title:
        raise NodeError("ae_title is empty (1 to 16 characters)")
    if len(title) > 16:
        raise NodeError(f"ae_title {title[:40]!r} is longer than 16 characters")
    if any(not (0x20 <= ord(c) <= 0x7E) for c in title):
        raise NodeError("ae_title may hold only printable ASCII characters (no control characters, no accents)")
    if "\\" in title:
        raise NodeError("ae_title may not contain a backslash")
    return title


def check_host(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise NodeError("host must be a host name or an IP address")
    host = value.strip()
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if len(host) > 253 or not _HOST.match(host):
        raise NodeError(f"host {host[:80]!r} is neither an IP address nor a valid host name")
    return host.lower()


def check_port(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise NodeError(f"port must be a whole number from 1 to 65535 (got {value!r})")
    return value


def check_role(value) -> str:
    if value not in NODE_ROLES:
        raise NodeError(f"role must be one of {', '.join(NODE_ROLES)} (got {str(value)[:40]!r})")
    return value


def check_stow_url(value) -> str:
    """A DICOMweb service root (``http(s)://host[:port]/path``, where ``/studies`` takes STOW-RS)."""
    from urllib.parse import urlsplit

    if not isinstance(value, str) or not 0 < len(value.strip()) <= 500:
        raise NodeError("stow_url must be the DICOMweb address of the destination, e.g. http://pacs:8042/dicom-web")
    url = value.strip().rstrip("/")
    try:
        parts = urlsplit(url)
        parts.port   # noqa: B018 - raises on a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment \
            or any(c.isspace() or ord(c) < 32 for c in url):
        raise NodeError("stow_url must be an http or https address without query, e.g. http://pacs:8042/dicom-web")
    if parts.username or parts.password:
        raise NodeError("stow_url may not hold a user name or password")
    return url


def create(session: Session, organisation: str, ae_title, host, port, role, by: User | None = None,
           address: str = "", stow_url=None) -> DicomNode:
    """Register a node (checked as the module says); audited. With ``stow_url`` the node is a
    DICOMweb destination (results by STOW-RS); its host and port default to the URL's."""
    if stow_url is not None:
        from urllib.parse import urlsplit

        stow_url = check_stow_url(stow_url)
        if role != "destination":
            raise NodeError("a DICOMweb (stow_url) node is a destination: role must be destination")
        u = urlsplit(stow_url)
        host = host if host not in (None, "") else u.hostname
        port = port if port not in (None, "") else (u.port or (443 if u.scheme == "https" else 80))
    title, host, port, role = check_ae_title(ae_title), check_host(host), check_port(port), check_role(role)
    org = accounts.organisation(session, organisation)
    if not accounts.in_scope(by, org.id):
        raise NodeError(f"an administrator of {by.organisation.name} registers nodes of that organisation only", 403)
    same = session.execute(select(DicomNode).where(DicomNode.ae_title == title)).scalars().all()
    for other in same:
        if other.organisation_id == org.id and other.host == host and other.port == port:
            raise NodeError(f"the node {title} at {host}:{port} is already registered for {org.name} "
                            f"(id {other.id}); delete it first to change its role", 409)
        if role in SOURCE_ROLES and other.role in SOURCE_ROLES:
            raise NodeError(f"the AE title {title} already names a source node (id {other.id}); the calling AE "
                            "title of a source must be unique, since it decides which organisation the "
                            "instances belong to", 409)
    node = DicomNode(organisation_id=org.id, ae_title=title, host=host, port=port, role=role, stow_url=stow_url)
    session.add(node)
    session.flush()
    audit.record(session, "dicom_node.create", by, "dicom_node", node.id, address,
                 {"organisation": org.name, "ae_title": title, "host": host, "port": port, "role": role,
                  "stow_url": stow_url},
                 organisation_id=org.id)
    return node


def listing(session: Session, by: User | None = None) -> list[DicomNode]:
    """The nodes ``by`` (an administrator) manages: a hospital's own, or all for the platform's."""
    q = select(DicomNode).order_by(DicomNode.organisation_id, DicomNode.ae_title, DicomNode.id)
    scope = accounts.admin_scope(by) if by is not None else None
    if scope is not None:
        q = q.where(DicomNode.organisation_id == scope)
    return list(session.execute(q).scalars())


def delete(session: Session, node_id: int, by: User | None = None, address: str = "") -> None:
    node = session.get(DicomNode, node_id) if 0 < node_id < 2**63 else None
    if node is None or not accounts.in_scope(by, node.organisation_id):
        raise NodeError("no such DICOM node", 404)
    audit.record(session, "dicom_node.delete", by, "dicom_node", node.id, address,
                 {"ae_title": node.ae_title, "host": node.host, "port": node.port, "role": node.role},
                 organisation_id=node.organisation_id)
    session.delete(node)
    session.flush()


def source_for(session: Session, calling_ae: str, peer_address: str = "", check_address: bool = True) -> DicomNode | None:
    """The source node a calling AE title (and the peer's address) stands for, else None."""
    title = (calling_ae or "").strip(" ")
    node = session.execute(select(DicomNode).where(DicomNode.ae_title == title,
                                                   DicomNode.role.in_(SOURCE_ROLES))).scalars().first()
    if node is None:
        return None
    if check_address and peer_address and not address_matches(node.host, peer_address):
        return None
    return node


def address_matches(host: str, peer: str) -> bool:
    """Whether ``peer`` (an IP address) is one of the addresses ``host`` stands for."""
    try:
        peer_ip = ipaddress.ip_address(peer)
    except ValueError:
        return False
    try:
        return ipaddress.ip_address(host) == peer_ip
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return any(ipaddress.ip_address(i[4][0].split("%")[0]) == peer_ip for i in infos)


def destinations(session: Session, organisation_id: int) -> list[DicomNode]:
    return list(session.execute(select(DicomNode).where(DicomNode.organisation_id == organisation_id,
                                                        DicomNode.role.in_(DESTINATION_ROLES))
                                .order_by(DicomNode.id)).scalars())
