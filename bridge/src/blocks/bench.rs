//! N devices downloading one image at once (being written).
