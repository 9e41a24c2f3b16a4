pub mod demo;
pub mod sql;
pub mod workers;
