//! `--schedule auto`: placeholder, filled below.
