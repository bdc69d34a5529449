//! `helm template` for the tests, without helm: renders deploy/helm/slabtrace with the part of
//! Go's text/template and Sprig that the chart uses, so the tests can check what the chart
//! produces with its default values and with overrides.
//!
//! Implemented, with Helm's meaning: text and `{{ }}` actions with `{{-`/`-}}` whitespace
//! trimming and `{{/* */}}` comments; `define`, `if`/`else if`/`else`, `with`/`else`,
//! `range` (over a list or a map's values, sorted by key) and `end`; pipelines of commands
//! joined by `|`, with parentheses, `.`, `$`, field chains (`.Values.image.tag`), string,
//! number and boolean literals; the functions `include`, `default`, `quote`, `toYaml`,
//! `nindent`, `indent`, `dir`, `trunc` and `trimSuffix`. Anything else is an error that names
//! it, so a chart that leaves this subset fails its tests instead of rendering wrongly.
//!
//! Stricter than Helm where that catches mistakes: a field that is not in the values is an
//! error (Helm prints nothing), and so is printing a map or a list without `toYaml`.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    path::Path,
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::{Map, Value};

/// The release a chart is rendered for (`helm template NAME --namespace NAMESPACE`).
#[derive(Clone, Debug)]
pub struct Release {
    /// `.Release.Name`.
    pub name: String,
    /// `.Release.Namespace`.
    pub namespace: String,
}

/// What a chart rendered to.
#[derive(Debug)]
pub struct Rendered {
    /// Each template's output (`templates/daemonset.yaml` → its YAML), in file-name order,
    /// helpers and NOTES.txt left out.
    pub manifests: BTreeMap<String, String>,
    /// templates/NOTES.txt, rendered.
    pub notes: Option<String>,
    /// The values after the overrides were merged in.
    pub values: Value,
}

/// Renders the chart in `dir` for `release`, with `overrides` merged into its values.yaml as
/// `helm --set`/`-f` would (maps merge key by key; anything else replaces; null removes).
pub fn render(dir: &Path, release: &Release, overrides: &Value) -> Result<Rendered> {
    let chart: Value = yaml_file(&dir.join("Chart.yaml"))?;
    let mut values: Value = yaml_file(&dir.join("values.yaml"))?;
    merge(&mut values, overrides);
    let mut chart_object = Map::new();
    for (key, v) in chart.as_object().context("Chart.yaml is not a map")? {
        // Helm's .Chart fields are the Chart.yaml keys, capitalised.
        let mut name = key.clone();
        if let Some(first) = name.get_mut(..1) {
            first.make_ascii_uppercase();
        }
        chart_object.insert(name, v.clone());
    }
    let root = serde_json::json!({
        "Values": values,
        "Chart": chart_object,
        "Release": {
            "Name": release.name,
            "Namespace": release.namespace,
            "Service": "Helm",
            "IsInstall": true,
            "IsUpgrade": false,
            "Revision": 1,
        },
    });

    let mut files: Vec<(String, String)> = Vec::new();
    let templates = dir.join("templates");
    for entry in fs::read_dir(&templates).with_context(|| format!("{}", templates.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if path.is_file() {
            let text = fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
            files.push((format!("templates/{name}"), text));
        }
    }
    files.sort();

    // Like Helm, every file's `define`s are visible to every other file.
    let mut defines = HashMap::new();
    let mut bodies = Vec::new();
    for (name, text) in &files {
        let body = parse(text, &mut defines).with_context(|| format!("parsing {name}"))?;
        bodies.push((name.clone(), body));
    }
    let engine = Engine { defines, root: root.clone() };
    let mut manifests = BTreeMap::new();
    let mut notes = None;
    for (name, body) in &bodies {
        let base = name.trim_start_matches("templates/");
        if base.starts_with('_') {
            continue;
        }
        let mut out = String::new();
        engine.exec(body, &root, &mut out).with_context(|| format!("rendering {name}"))?;
        if base == "NOTES.txt" {
            notes = Some(out);
        } else {
            manifests.insert(name.clone(), out);
        }
    }
    Ok(Rendered { manifests, notes, values })
}

fn yaml_file(path: &Path) -> Result<Value> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_norway::from_str(&text).with_context(|| format!("{} is not YAML", path.display()))
}

/// Merges `over` into `base` as Helm merges user values into a chart's defaults.
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                if v.is_null() {
                    b.remove(k);
                } else if let Some(existing) = b.get_mut(k) {
                    merge(existing, v);
                } else {
                    b.insert(k.clone(), v.clone());
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

// ---- parsing ----

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Output(Pipeline),
    /// `if`/`else if` branches, then `else`.
    If(Vec<(Pipeline, Vec<Node>)>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
    Range(Pipeline, Vec<Node>, Vec<Node>),
}

type Pipeline = Vec<Command>;
type Command = Vec<Operand>;

#[derive(Debug, Clone)]
enum Operand {
    /// `.A.B` (empty: `.`).
    Dot(Vec<String>),
    /// `$.A.B` (empty: `$`).
    Root(Vec<String>),
    Literal(Value),
    Function(String),
    Sub(Pipeline),
}

/// A piece of a template: text, or an action's inside (trim markers removed).
enum Piece {
    Text(String),
    Action(String),
}

/// Splits a template into text and actions, applying `{{-` and `-}}` trimming and dropping
/// comments.
fn lex(src: &str) -> Result<Vec<Piece>> {
    let mut pieces = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while !rest.is_empty() {
        let Some(open) = rest.find("{{") else {
            let text = if trim_next { rest.trim_start() } else { rest };
            pieces.push(Piece::Text(text.to_owned()));
            break;
        };
        let mut text = &rest[..open];
        if trim_next {
            text = text.trim_start();
        }
        let mut inner = &rest[open + 2..];
        let trim_before = inner.starts_with("- ")
            || inner.starts_with("-\n")
            || inner.starts_with("-\t")
            || inner.starts_with("-\r");
        if trim_before {
            text = text.trim_end();
            inner = &inner[1..];
        }
        pieces.push(Piece::Text(text.to_owned()));
        let close = action_end(inner).context("an action without its closing }}")?;
        let mut action = &inner[..close];
        rest = &inner[close + 2..];
        trim_next = false;
        if action.ends_with(" -")
            || action.ends_with("\n-")
            || action.ends_with("\t-")
            || action.ends_with("\r-")
        {
            trim_next = true;
            action = &action[..action.len() - 1];
        }
        let action = action.trim();
        if action.starts_with("/*") {
            ensure!(action.ends_with("*/"), "a comment must end with */ right before }}");
            continue;
        }
        pieces.push(Piece::Action(action.to_owned()));
    }
    Ok(pieces)
}

/// Where an action's `}}` is: the first one outside string literals and comments.
fn action_end(s: &str) -> Option<usize> {
    if s.trim_start().starts_with("/*") {
        let end = s.find("*/")?;
        return s[end..].find("}}").map(|i| end + i);
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let c = bytes[i];
        match quote {
            Some(q) if c == b'\\' && q == b'"' => i += 1,
            Some(q) if c == q => quote = None,
            None if c == b'"' || c == b'`' => quote = Some(c),
            None if c == b'}' && bytes.get(i + 1) == Some(&b'}') => return Some(i),
            // Inside a literal, or outside one and not a quote or the end.
            Some(_) | None => {}
        }
        i += 1;
    }
    None
}

/// What ended a list of nodes.
enum Ending {
    Eof,
    End,
    Else(Option<Pipeline>),
}

/// Parses `src`; its `define`s go into `defines`.
fn parse(src: &str, defines: &mut HashMap<String, Vec<Node>>) -> Result<Vec<Node>> {
    let pieces = lex(src)?;
    let mut it = pieces.into_iter();
    let (nodes, ending) = parse_list(&mut it, defines)?;
    match ending {
        Ending::Eof => Ok(nodes),
        Ending::End => bail!("an {{{{ end }}}} without its if/with/range/define"),
        Ending::Else(_) => bail!("an {{{{ else }}}} outside if/with/range"),
    }
}

fn parse_list(
    it: &mut impl Iterator<Item = Piece>,
    defines: &mut HashMap<String, Vec<Node>>,
) -> Result<(Vec<Node>, Ending)> {
    let mut nodes = Vec::new();
    while let Some(piece) = it.next() {
        let action = match piece {
            Piece::Text(t) => {
                if !t.is_empty() {
                    nodes.push(Node::Text(t));
                }
                continue;
            }
            Piece::Action(a) => a,
        };
        let (word, rest) = action.split_once(char::is_whitespace).unwrap_or((&action, ""));
        match word {
            "end" => return Ok((nodes, Ending::End)),
            "else" => {
                let rest = rest.trim();
                let cond = match rest.strip_prefix("if") {
                    Some(c) if c.starts_with(char::is_whitespace) => Some(pipeline(c)?),
                    _ if rest.is_empty() => None,
                    _ => bail!("unsupported: {{{{ else {rest} }}}}"),
                };
                return Ok((nodes, Ending::Else(cond)));
            }
            "if" => {
                let mut branches = Vec::new();
                let mut cond = pipeline(rest)?;
                let otherwise = loop {
                    let (body, ending) = parse_list(it, defines)?;
                    branches.push((cond, body));
                    match ending {
                        Ending::End => break Vec::new(),
                        Ending::Else(Some(next)) => cond = next,
                        Ending::Else(None) => break expect_end(it, defines)?,
                        Ending::Eof => bail!("an {{{{ if }}}} without its {{{{ end }}}}"),
                    }
                };
                nodes.push(Node::If(branches, otherwise));
            }
            "with" | "range" => {
                let p = pipeline(rest)?;
                let (body, ending) = parse_list(it, defines)?;
                let otherwise = match ending {
                    Ending::End => Vec::new(),
                    Ending::Else(None) => expect_end(it, defines)?,
                    Ending::Else(Some(_)) => bail!("unsupported: else if in {word}"),
                    Ending::Eof => bail!("a {{{{ {word} }}}} without its {{{{ end }}}}"),
                };
                nodes.push(if word == "with" {
                    Node::With(p, body, otherwise)
                } else {
                    Node::Range(p, body, otherwise)
                });
            }
            "define" => {
                let name: String = serde_json::from_str(rest.trim())
                    .with_context(|| format!("define needs a quoted name: {rest}"))?;
                let (body, ending) = parse_list(it, defines)?;
                ensure!(matches!(ending, Ending::End), "define {name:?} without its end");
                defines.insert(name, body);
            }
            "template" | "block" | "break" | "continue" => bail!("unsupported: {{{{ {word} }}}}"),
            _ => nodes.push(Node::Output(pipeline(&action)?)),
        }
    }
    Ok((nodes, Ending::Eof))
}

fn expect_end(
    it: &mut impl Iterator<Item = Piece>,
    defines: &mut HashMap<String, Vec<Node>>,
) -> Result<Vec<Node>> {
    let (body, ending) = parse_list(it, defines)?;
    ensure!(matches!(ending, Ending::End), "an else without its end");
    Ok(body)
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Pipe,
    Open,
    Close,
}

fn tokens(src: &str) -> Result<Vec<Token>> {
    let mut out = Vec::new();
    let mut chars = src.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '|' => {
                chars.next();
                out.push(Token::Pipe);
            }
            '(' => {
                chars.next();
                out.push(Token::Open);
            }
            ')' => {
                chars.next();
                out.push(Token::Close);
            }
            '"' => {
                let mut lit = String::from('"');
                chars.next();
                loop {
                    let c = chars.next().context("an unterminated string")?;
                    lit.push(c);
                    if c == '\\' {
                        lit.push(chars.next().context("an unterminated string")?);
                    } else if c == '"' {
                        break;
                    }
                }
                out.push(Token::Str(serde_json::from_str(&lit).with_context(|| lit.clone())?));
            }
            '`' => {
                chars.next();
                let lit: String = chars.by_ref().take_while(|&c| c != '`').collect();
                out.push(Token::Str(lit));
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || "|()\"`".contains(c) {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                out.push(Token::Word(word));
            }
        }
    }
    Ok(out)
}

fn pipeline(src: &str) -> Result<Pipeline> {
    let toks = tokens(src)?;
    let mut pos = 0;
    let p = parse_pipeline(&toks, &mut pos)?;
    ensure!(pos == toks.len(), "unexpected {:?} in {src:?}", toks.get(pos));
    Ok(p)
}

fn parse_pipeline(toks: &[Token], pos: &mut usize) -> Result<Pipeline> {
    let mut commands = Vec::new();
    let mut current: Command = Vec::new();
    while let Some(tok) = toks.get(*pos) {
        *pos += 1;
        match tok {
            Token::Close => {
                *pos -= 1;
                break;
            }
            Token::Pipe => {
                ensure!(!current.is_empty(), "an empty command before |");
                commands.push(std::mem::take(&mut current));
            }
            Token::Open => {
                let sub = parse_pipeline(toks, pos)?;
                ensure!(toks.get(*pos) == Some(&Token::Close), "a ( without its )");
                *pos += 1;
                current.push(Operand::Sub(sub));
            }
            Token::Str(s) => current.push(Operand::Literal(Value::String(s.clone()))),
            Token::Word(w) => current.push(word(w)?),
        }
    }
    ensure!(!current.is_empty(), "an empty pipeline");
    commands.push(current);
    Ok(commands)
}

fn word(w: &str) -> Result<Operand> {
    let fields = |path: &str| -> Vec<String> {
        path.split('.').filter(|f| !f.is_empty()).map(str::to_owned).collect()
    };
    Ok(match w {
        "true" => Operand::Literal(Value::Bool(true)),
        "false" => Operand::Literal(Value::Bool(false)),
        "nil" => Operand::Literal(Value::Null),
        "$" => Operand::Root(Vec::new()),
        _ if w.starts_with("$.") => Operand::Root(fields(&w[2..])),
        _ if w.starts_with('$') => bail!("unsupported: template variables ({w})"),
        _ if w.starts_with('.') => Operand::Dot(fields(w)),
        _ if w.starts_with(|c: char| c.is_ascii_digit() || c == '-') => {
            Operand::Literal(serde_json::from_str(w).with_context(|| format!("a number? {w}"))?)
        }
        _ if w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
            Operand::Function(w.to_owned())
        }
        _ => bail!("unsupported: {w}"),
    })
}

// ---- execution ----

struct Engine {
    defines: HashMap<String, Vec<Node>>,
    root: Value,
}

impl Engine {
    fn exec(&self, nodes: &[Node], dot: &Value, out: &mut String) -> Result<()> {
        for node in nodes {
            match node {
                Node::Text(t) => out.push_str(t),
                Node::Output(p) => out.push_str(&print(&self.eval(p, dot)?)?),
                Node::If(branches, otherwise) => {
                    let mut taken = false;
                    for (cond, body) in branches {
                        if truthy(&self.eval(cond, dot)?) {
                            self.exec(body, dot, out)?;
                            taken = true;
                            break;
                        }
                    }
                    if !taken {
                        self.exec(otherwise, dot, out)?;
                    }
                }
                Node::With(p, body, otherwise) => {
                    let v = self.eval(p, dot)?;
                    if truthy(&v) {
                        self.exec(body, &v, out)?;
                    } else {
                        self.exec(otherwise, dot, out)?;
                    }
                }
                Node::Range(p, body, otherwise) => {
                    let items: Vec<Value> = match self.eval(p, dot)? {
                        Value::Array(a) => a,
                        // Go ranges over a map's values in key order (serde_json's maps are
                        // sorted).
                        Value::Object(m) => m.into_iter().map(|(_, v)| v).collect(),
                        Value::Null => Vec::new(),
                        other => bail!("range over {other}"),
                    };
                    if items.is_empty() {
                        self.exec(otherwise, dot, out)?;
                    }
                    for item in &items {
                        self.exec(body, item, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn eval(&self, pipeline: &Pipeline, dot: &Value) -> Result<Value> {
        let mut piped: Option<Value> = None;
        for command in pipeline {
            piped = Some(self.command(command, dot, piped)?);
        }
        piped.context("an empty pipeline")
    }

    fn command(&self, command: &Command, dot: &Value, piped: Option<Value>) -> Result<Value> {
        let Some((first, rest)) = command.split_first() else { bail!("an empty command") };
        if let Operand::Function(name) = first {
            let mut args = rest.iter().map(|a| self.operand(a, dot)).collect::<Result<Vec<_>>>()?;
            args.extend(piped);
            return self.call(name, &args).with_context(|| format!("in {name}"));
        }
        ensure!(rest.is_empty(), "{first:?} is not a function, but has arguments");
        ensure!(piped.is_none(), "{first:?} is not a function, but something is piped into it");
        self.operand(first, dot)
    }

    fn operand(&self, operand: &Operand, dot: &Value) -> Result<Value> {
        match operand {
            Operand::Dot(path) => field(dot, path),
            Operand::Root(path) => field(&self.root, path),
            Operand::Literal(v) => Ok(v.clone()),
            Operand::Function(name) => self.call(name, &[]),
            Operand::Sub(p) => self.eval(p, dot),
        }
    }

    fn call(&self, name: &str, args: &[Value]) -> Result<Value> {
        let arity = |n: usize| -> Result<()> {
            ensure!(args.len() == n, "{name} takes {n} arguments: {args:?}");
            Ok(())
        };
        let string = |v: &Value| -> Result<String> { print(v) };
        let count = |v: &Value| -> Result<usize> {
            usize::try_from(v.as_u64().with_context(|| format!("{name}: {v} is not a count"))?)
                .map_err(Into::into)
        };
        Ok(match name {
            "include" => {
                arity(2)?;
                let template = args[0].as_str().context("include needs a template name")?;
                let body = self
                    .defines
                    .get(template)
                    .with_context(|| format!("no template {template:?} is defined"))?;
                let mut out = String::new();
                self.exec(body, &args[1], &mut out)?;
                Value::String(out)
            }
            // Sprig: `default DEFAULT GIVEN` is GIVEN unless it is empty.
            "default" => {
                arity(2)?;
                if truthy(&args[1]) { args[1].clone() } else { args[0].clone() }
            }
            "quote" => Value::String(
                args.iter()
                    .filter(|a| !a.is_null())
                    .map(|a| Ok(serde_json::to_string(&string(a)?)?))
                    .collect::<Result<Vec<_>>>()?
                    .join(" "),
            ),
            // Helm's toYaml: sigs.k8s.io/yaml's output without its last newline.
            "toYaml" => {
                arity(1)?;
                let text = serde_norway::to_string(&args[0])?;
                Value::String(text.trim_end_matches('\n').to_owned())
            }
            "indent" | "nindent" => {
                arity(2)?;
                let pad = " ".repeat(count(&args[0])?);
                let text = format!("{pad}{}", string(&args[1])?.replace('\n', &format!("\n{pad}")));
                Value::String(if name == "nindent" { format!("\n{text}") } else { text })
            }
            // Go's path.Dir.
            "dir" => {
                arity(1)?;
                let p = string(&args[0])?;
                let trimmed = p.trim_end_matches('/');
                Value::String(match trimmed.rfind('/') {
                    Some(0) => "/".to_owned(),
                    Some(i) => trimmed[..i].to_owned(),
                    None if p.starts_with('/') => "/".to_owned(),
                    None => ".".to_owned(),
                })
            }
            "trunc" => {
                arity(2)?;
                Value::String(string(&args[1])?.chars().take(count(&args[0])?).collect())
            }
            "trimSuffix" => {
                arity(2)?;
                let (suffix, s) = (string(&args[0])?, string(&args[1])?);
                Value::String(s.strip_suffix(suffix.as_str()).unwrap_or(&s).to_owned())
            }
            _ => bail!("unsupported function {name} (tests/src/helm.rs implements only a subset)"),
        })
    }
}

/// `.A.B` of `v`; a key that is not there is an error.
fn field(v: &Value, path: &[String]) -> Result<Value> {
    let mut cur = v;
    for (i, name) in path.iter().enumerate() {
        cur = cur
            .as_object()
            .with_context(|| format!(".{} is not a map", path[..i].join(".")))?
            .get(name)
            .with_context(|| format!("no .{} (not in the values)", path[..=i].join(".")))?;
    }
    Ok(cur.clone())
}

/// Go templates' truth: false, 0, nil and empty strings, lists and maps are false.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

/// How an action prints a value.
fn print(v: &Value) -> Result<String> {
    Ok(match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => bail!("printing a value that is nil"),
        Value::Array(_) | Value::Object(_) => bail!("printing a list or map ({v}): use toYaml"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_str(src: &str, values: &Value) -> Result<String> {
        let mut defines = HashMap::new();
        let body = parse(src, &mut defines)?;
        let root = serde_json::json!({ "Values": values });
        let engine = Engine { defines, root: root.clone() };
        let mut out = String::new();
        engine.exec(&body, &root, &mut out)?;
        Ok(out)
    }

    #[test]
    fn renders_what_helm_renders() {
        let values = serde_json::json!({
            "port": 9477, "empty": "", "list": ["a", "b"], "map": {"k": "v", "n": {"x": 1}},
            "sock": "/run/containerd/containerd.sock", "on": true
        });
        let cases = [
            ("a: {{ .Values.port }}", "a: 9477"),
            ("a: {{ .Values.port | quote }}", "a: \"9477\""),
            ("a:\n  {{- if .Values.on }} yes{{ else }} no{{ end }}", "a: yes"),
            ("{{ .Values.empty | default \"d\" }}", "d"),
            ("{{ default \"d\" .Values.port }}", "9477"),
            ("x:{{- range .Values.list }}\n- {{ . }}{{- end }}", "x:\n- a\n- b"),
            ("m:\n  {{- toYaml .Values.map | nindent 2 }}", "m:\n  k: v\n  n:\n    x: 1"),
            ("{{ with .Values.empty }}no{{ else }}else{{ end }}", "else"),
            ("{{ with .Values.map }}{{ .k }}{{ $.Values.port }}{{ end }}", "v9477"),
            ("{{ dir .Values.sock }}", "/run/containerd"),
            ("{{/* c */}}a {{- /* c */}} b", "a b"),
            ("{{ \"abc-\" | trunc 63 | trimSuffix \"-\" }}", "abc"),
            ("{{ define \"t\" }}[{{ . }}]{{ end }}{{ include \"t\" (quote \"x\") }}", "[\"x\"]"),
            ("{{ if .Values.empty }}1{{ else if .Values.on }}2{{ else }}3{{ end }}", "2"),
        ];
        for (src, want) in cases {
            assert_eq!(render_str(src, &values).unwrap(), want, "{src}");
        }
    }

    #[test]
    fn outside_the_subset_is_an_error() {
        let values = serde_json::json!({ "a": 1 });
        for src in ["{{ .Values.missing }}", "{{ upper \"a\" }}", "{{ $x := 1 }}", "{{ if 1 }}"] {
            assert!(render_str(src, &values).is_err(), "{src}");
        }
    }

    #[test]
    fn overrides_merge_like_helm() {
        let mut base = serde_json::json!({"a": {"b": 1, "c": 2}, "l": [1], "d": 1});
        merge(&mut base, &serde_json::json!({"a": {"b": 3}, "l": [2, 3], "d": null}));
        assert_eq!(base, serde_json::json!({"a": {"b": 3, "c": 2}, "l": [2, 3]}));
    }
}
