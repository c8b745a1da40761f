//! AWS EC2's Query API dialect: `GetConsoleScreenshot` (2016-11-15), signed
//! with SigV4. Its pieces, each tested on its own, until the request pipeline
//! calls them.
#![allow(dead_code)]

mod params;
mod sigv4;
mod wire;
