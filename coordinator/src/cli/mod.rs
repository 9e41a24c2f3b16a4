pub mod demo;
pub mod output;
pub mod sql;
pub mod workers;
