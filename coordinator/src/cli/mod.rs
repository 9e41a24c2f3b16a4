pub mod demo;
pub mod sql;
