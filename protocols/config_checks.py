"""Cross-field checks of the configuration document (used by config.validate_config): bus
references, unique ids, units, addresses, profile and payload format names, quantities.
Reads only well-formed parts, so it never raises on any input. No I/O."""

from protocols import quantities
from protocols.schema import is_int


def _items(doc, key):
    """(index, entry) of the well-formed (dict) entries of a list field."""
    v = doc.get(key)
    if not isinstance(v, list) or len(v) > 256:
        return []
    return [(i, v[i]) for i in range(len(v)) if isinstance(v[i], dict)]


def check(doc, known_profiles, known_formats, errors):
    """Append the cross-field problems of a configuration document to errors."""
    buses = {}
    ports = {}
    for i, bus in _items(doc, "buses"):
        bid = bus.get("id")
        if isinstance(bid, str):
            if bid in buses:
                errors.append(
                    "buses[%d].id: %r is already used by buses[%d]" % (i, bid, buses[bid][0])
                )
            else:
                buses[bid] = (i, bus.get("type"))
        port = bus.get("port")
        if bus.get("type") == "rtu" and isinstance(port, str):
            if port in ports:
                errors.append(
                    "buses[%d].port: %s is already used by buses[%d]" % (i, port, ports[port])
                )
            else:
                ports[port] = i
    used = {}
    units = {}
    for i, meter in _items(doc, "meters"):
        path = "meters[%d]" % i
        _claim_id(meter.get("id"), path, used, errors)
        bid = meter.get("bus")
        unit = meter.get("unit")
        if isinstance(bid, str):
            if bid not in buses:
                known = ", ".join(sorted(buses)) or "none defined"
                errors.append("%s.bus: no bus with id %r (buses: %s)" % (path, bid, known))
            elif is_int(unit):
                if buses[bid][1] == "rtu" and (unit < 1 or unit > 247):
                    errors.append(
                        "%s.unit: must be 1..247 on RTU bus %s (0 and 248..255 only on TCP)"
                        % (path, bid)
                    )
                key = (bid, unit)
                if key in units:
                    errors.append(
                        "%s.unit: unit %d on bus %s is already used by %s"
                        % (path, unit, bid, units[key])
                    )
                else:
                    units[key] = path
        profile = meter.get("profile")
        if known_profiles is not None and isinstance(profile, str):
            if profile not in known_profiles:
                names = ", ".join(sorted(known_profiles))
                errors.append("%s.profile: unknown profile %r (known: %s)" % (path, profile, names))
                profile = None
        provided = None
        if isinstance(known_profiles, dict) and profile in known_profiles:
            provided = known_profiles[profile]
        _check_quantities(meter.get("quantities"), path, provided, profile, errors)
    sensors = _items(doc, "sensors")
    addresses = {}  # (address, index or None) -> path
    for i, sensor in sensors:
        path = "sensors[%d]" % i
        _claim_id(sensor.get("id"), path, used, errors)
        address = sensor.get("address")
        index = sensor.get("index")
        if isinstance(address, str):
            if len(address) not in (8, 16):
                errors.append(
                    "%s.address: %r must be 8 hex digits (P2P address) or 16 (EUI)"
                    % (path, address)
                )
            key = (address.upper(), index if is_int(index) else None)
            if key in addresses:
                what = address if key[1] is None else "%s index %d" % (address, index)
                errors.append("%s.address: %s is already used by %s" % (path, what, addresses[key]))
            else:
                addresses[key] = path
        fmt = sensor.get("format")
        if known_formats is not None and isinstance(fmt, str) and fmt not in known_formats:
            errors.append(
                "%s.format: unknown payload format %r (known: %s)"
                % (path, fmt, ", ".join(sorted(known_formats)))
            )
        _check_quantities(sensor.get("quantities"), path, None, None, errors)
    if sensors and "lora" not in doc:
        errors.append("lora: missing (required when sensors are configured)")


def _claim_id(dev, path, used, errors):
    if not is_int(dev):
        return
    if dev in used:
        errors.append("%s.id: device id %d is already used by %s" % (path, dev, used[dev]))
    else:
        used[dev] = path


def _check_quantities(names, path, provided, profile, errors):
    if not isinstance(names, list) or len(names) > 255:
        return
    seen = {}
    for j in range(len(names)):
        q = names[j]
        if not isinstance(q, str):
            continue
        where = "%s.quantities[%d]" % (path, j)
        if not quantities.is_quantity(q):
            errors.append("%s: unknown quantity %r" % (where, q))
        elif provided is not None and q not in provided:
            errors.append("%s: profile %s does not read %s" % (where, profile, q))
        if q in seen:
            errors.append("%s: %s is listed twice" % (where, q))
        seen[q] = True
