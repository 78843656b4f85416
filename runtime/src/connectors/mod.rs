//! Connectors: sources and sinks that plug into the engine through the [`Source`] and
//! [`Sink`] traits. Nothing in the engine depends on a particular connector.
//!
//! [`Source`]: crate::source::Source
//! [`Sink`]: crate::source::Sink

mod blackhole;
mod collect;
mod collection;
mod datagen;
mod filesystem;
mod nexmark;
mod print;
mod ranges;
mod rate;

pub use blackhole::BlackholeSink;
pub use collect::{CollectSink, Collected};
pub use collection::CollectionSource;
pub use datagen::{BidGenerator, DataGen, FieldGen, bid_schema};
pub use filesystem::{FileFormat, FileSink, FileSource};
pub use nexmark::{NexmarkGenerator, STRING_FIELDS, UnreadFields, nexmark_schema};
pub use print::PrintSink;
