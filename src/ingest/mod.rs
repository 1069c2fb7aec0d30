//! From the folder to folded data: which files count (`watch`, `regular`), what changed
//! (`changes`), reading them in chunks of whole lines (`lines`), and folding those into
//! table rows and partials (`fold`, `fastcsv`).

pub mod changes;
pub mod fastcsv;
pub mod fold;
pub mod lines;
pub mod regular;
pub mod watch;
