"""Plumbing shared by every stage: atomic files, the job runner, small tables
(ID lists, failures, Parquet), the strict options base, intensity scaling, pictures, errors.

Nothing here knows about cells or labels; each stage (:mod:`hpacell.segmentation`,
:mod:`hpacell.cellcrops`, :mod:`hpacell.classifier`, :mod:`hpacell.workflows`) may import it.
"""

from hpacell.utils.lazy import lazy_exports

_EXPORTS = {
    "HpacellError": ".errors",
    "InputError": ".errors",
    "atomic_file": ".files",
    "atomic_path": ".files",
    "atomic_write_bytes": ".files",
    "clean_stale_temps": ".files",
    "write_json": ".files",
    "JobResult": ".jobs",
    "run_jobs": ".jobs",
    "effective_bits": ".intensity",
    "to_float": ".intensity",
    "to_uint8": ".intensity",
    "composite": ".render",
    "draw_outlines": ".render",
    "side_by_side": ".render",
    "lazy_exports": ".lazy",
    "Options": ".options",
    "OptionsError": ".options",
    "validation_message": ".options",
    "read_id_list": ".tables",
    "read_id_table": ".tables",
    "write_failures": ".tables",
    "write_parquet": ".tables",
    "claim_folder": ".outputs",
    "check_stamp": ".outputs",
    "write_stamp": ".outputs",
    "fingerprint": ".outputs",
    "file_digest": ".outputs",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
