"""A fitted profile as a YAML file that says where every coefficient came from."""

from __future__ import annotations

import dataclasses
import json

import yaml

from energyprune.energy.calibration.observations import CalibrationResult
from energyprune.files import atomic_write_text

__all__ = ["profile_to_yaml", "write_calibration"]

_LATENCY_UNITS = (
    "Fitted to latency, not energy: every fitted coefficient is picoseconds per unit although "
    "the fields say pJ, so estimates priced with this profile are seconds labelled as joules.",
)


def profile_to_yaml(result: CalibrationResult) -> str:
    """The fitted profile as a hardware-profile YAML, citing the measurements it was fitted to
    and naming, coefficient by coefficient, which were fitted and which were kept."""
    hw, rep = result.profile, result.report
    kept = rep["not_calibrated"]
    fitted = sorted(set(hw.coefficients()) - set(kept))
    quantity = rep.get("quantity", "joules per sample")
    data = {
        "name": hw.name,
        "summary": f"{hw.name}: calibrated to {rep['measured_with']} ({rep['device']})",
        "description": (
            f"Calibrated on {rep['device']} ({rep['date']}) by `energyprune calibrate` from "
            f"{rep['n_train']} measured rows; fitted to {quantity}."
        ),
        "sources": [
            f"energyprune calibrate: {rep['measured_with']} on {rep['device']}, {rep['date']}; "
            f"fitted on {rep['n_train']} of them, {rep['n_heldout']} held out "
            f"({_split_words(rep)})",
            f"fitted to those measurements: {', '.join(fitted)}",
            f"structure and uncalibrated coefficients from {rep['base_profile']}",
        ],
        "assumptions": [
            _method(rep, quantity),
            f"Kept from {rep['base_profile']} (not exercised): {', '.join(kept) or 'none'}",
            *_LATENCY_UNITS * (rep.get("fitted_column") == "latency_ms"),
        ],
        "compute_pj": hw.compute_pj,
        "memory_pj_per_byte": hw.memory_pj_per_byte,
        "buffer_bytes": hw.buffer_bytes,
        "accesses_per_mac": hw.accesses_per_mac,
        "zero_skipping": hw.zero_skipping,
        "channel_multiple": hw.channel_multiple,
        "launch_pj": hw.launch_pj,
        "unaligned_mac_pj": hw.unaligned_mac_pj,
        "calibration": hw.calibration,
    }
    if hw.timed:  # rates, static power and the runtime's terms travel too (fitted with time)
        data.update(
            peak_flops=hw.peak_flops,
            bandwidth=hw.bandwidth,
            launch_s=hw.launch_s,
            static_w=hw.static_w,
            forward_s=hw.forward_s,
            active_w=hw.active_w,
            runtime=hw.runtime.to_dict(),
        )
    if hw.power is not None:
        data["power_w"] = {"idle": hw.power.idle_w, "max": hw.power.max_w}
    if hw.interconnect is not None:
        data["interconnect"] = dataclasses.asdict(hw.interconnect)
    return yaml.safe_dump(data, sort_keys=False, width=100)


def _split_words(rep: dict) -> str:
    """How the held-out rows were chosen, in words."""
    if rep.get("split") == "random":
        return "rows at random"
    if rep.get("split") == "each":
        return "each of " + ", ".join(rep.get("heldout_families") or []) + " in turn"
    families = rep.get("heldout_families") or []
    return f"{len(families)} whole families: {', '.join(families[:6])}" + (
        ", ..." if len(families) > 6 else ""
    )


def _method(rep: dict, quantity: str) -> str:
    """How the coefficients were fitted, in one sentence, by the kind of fit (``fit``)."""
    head = (
        f"Fitted by least squares on relative error of {quantity}, every cost within bounds "
        "(per-op and per-byte costs within a factor of the base's, powers within the device's "
        f"range) and pulled toward the base (strength {rep.get('shrink', 0.0):g}, chosen by "
        "grouped cross-validation on the training rows)"
    )
    return _METHODS[rep["fit"]](head, rep)


def _timed(head: str, rep: dict) -> str:
    return (
        f"{head}, over the dynamic features, predicted time (static_w) and predicted kernel "
        f"time (active_w); time was fitted to the measured latency first, by non-linear "
        f"least squares on log relative error ({', '.join(rep['time_terms_fitted'])}; "
        f"{rep['compute_efficiency']:.1%} and {rep['bandwidth_efficiency']:.1%} of the base's "
        "peaks), and no probe kernel may imply more than the device's maximum power: "
        "energy/calibration/timed_fit.py."
    )


def _per_token(head: str, rep: dict) -> str:
    return (
        f"{head}; static power is the coefficient of wall time and busy power of kernel time. "
        "First the serving runtime's time terms were fitted to measured inter-token latency "
        f"({rep['compute_efficiency']:.1%} and {rep['bandwidth_efficiency']:.1%} of the base's "
        f"peaks, {rep['graph_kernel_s'] * 1e6:.2f} us per fused kernel at least, "
        f"{rep['graph_step_s'] * 1e3:.2f} ms of host time per step), and no training pass may "
        "imply more than the board's maximum power: energy/calibration/per_token.py."
    )


#: the kind of fit (the report's ``fit``) → how it is described
_METHODS = {"linear": lambda head, rep: f"{head}.", "timed": _timed, "per-token": _per_token}


def write_calibration(result: CalibrationResult, out: str, report_path: str | None) -> None:
    """Write the profile YAML (and the fidelity JSON) atomically."""
    atomic_write_text(out, profile_to_yaml(result))
    if report_path:
        atomic_write_text(report_path, json.dumps(result.report, indent=2) + "\n")
