//! `csync2-watch generate man|completions DIR` (hidden): write the man
//! pages or the shell completions for packaging. The text comes from
//! [`crate::docs`], i.e. from the command line and the settings table
//! themselves.

use anyhow::Context as _;

use crate::cli::{GenerateArgs, GenerateWhat};
use crate::docs;
use crate::exit;

pub fn run(args: GenerateArgs) -> anyhow::Result<u8> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let files: Vec<(String, Vec<u8>)> = match args.what {
        GenerateWhat::Man => vec![
            ("csync2-watch.8".into(), docs::man_page().into_bytes()),
            (
                "csync2-watch.toml.5".into(),
                docs::settings_man_page().into_bytes(),
            ),
        ],
        GenerateWhat::Completions => docs::COMPLETIONS
            .iter()
            .map(|(shell, name)| (name.to_string(), docs::completions(*shell)))
            .collect(),
    };
    for (name, bytes) in files {
        let path = args.dir.join(&name);
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(exit::OK)
}
