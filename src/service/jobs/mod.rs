pub(crate) mod machine;
