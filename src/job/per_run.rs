//! One run's spec of a templated job. The first run is rendered and decoded whole; every later one starts
//! from a copy of the first's spec and renders and decodes again only the top-level fields that hold
//! templates. Decoding the whole job document per run (cloned as a JSON value, every field walked) was
//! most of a 100,000-run plan's time; the fields no template touches are the same for every run.
//! Problems keep their file:line:column: a field is decoded at its own path in the document.

use super::model::JobSpec;
use super::parse::{Document, decode};
use super::source::Seg;
use super::template::Templates;
use super::validate;
use crate::diagnostic::Diagnostic;
use serde_json::Value;
use std::collections::HashSet;
use std::ops::Range;

/// Below this many items per thread a plan is made on the calling thread: spawning costs more.
const MIN_CHUNK: usize = 512;

#[derive(Clone)]
pub(super) struct PerRun<'a> {
    templates: &'a Templates,
    doc: &'a Document,
    /// The job as every run starts from it (the document without its matrix).
    per_run: &'a Value,
    /// The templated top-level keys with their values in the document; None when one of them cannot be
    /// decoded on its own (`sandbox`, decoded with its kind first): every run is then decoded whole.
    keys: Option<Vec<(&'a str, &'a Value)>>,
    /// The first run's spec, once it was sound.
    first: Option<JobSpec>,
}

/// What a run's templates see and may not see: the context's names (for hints) and the secret names.
pub(super) type Names<'n> = (&'n [String], &'n HashSet<String>);

impl<'a> PerRun<'a> {
    pub fn new(templates: &'a Templates, doc: &'a Document, per_run: &'a Value) -> PerRun<'a> {
        let keys = templates.keys();
        let alone = keys.iter().all(|k| settable(k));
        let keys = alone.then(|| keys.into_iter().filter_map(|k| Some((k, per_run.get(k)?))).collect());
        PerRun { templates, doc, per_run, keys, first: None }
    }

    /// Every run's spec (or None) and problems, in plan order: the first on this thread (the others start
    /// from its spec), the rest in chunks on every core. A chunk stops once it has `max` different
    /// problems: the plan, which reads them in order, has stopped by then. `count` is at least 1
    /// (`expand_runs` returns before, without runs).
    pub fn all<F>(mut self, count: usize, render: F, max: usize) -> Vec<(Option<JobSpec>, Vec<Diagnostic>)>
    where
        F: Fn(&mut PerRun<'a>, usize, &mut Vec<Diagnostic>) -> Option<JobSpec> + Sync,
    {
        let mut problems = Vec::new();
        let first = render(&mut self, 0, &mut problems);
        let rest = in_chunks(count - 1, |chunk| {
            let mut own = self.clone();
            let mut seen = HashSet::new();
            let mut out = Vec::with_capacity(chunk.len());
            for i in chunk {
                let mut problems = Vec::new();
                let spec = render(&mut own, i + 1, &mut problems);
                seen.extend(problems.iter().map(|d| (d.message.clone(), d.span)));
                out.push((spec, problems));
                if seen.len() >= max {
                    break;
                }
            }
            out
        });
        std::iter::once((first, problems)).chain(rest.into_iter().flatten()).collect()
    }

    /// The run's spec rendered with `ctx`, checked; None with the problems in `diags`.
    pub fn spec(
        &mut self,
        ctx: &minijinja::Value,
        names: Names<'_>,
        job_dir: &validate::JobDir,
        diags: &mut Vec<Diagnostic>,
    ) -> Option<JobSpec> {
        let (Some(first), Some(keys)) = (&self.first, &self.keys) else {
            let mut value = self.per_run.clone();
            let before = diags.len();
            self.templates.render_into((&mut value, None), ctx, self.doc, names, diags);
            let spec = if diags.len() == before { super::build_spec(value, self.doc, job_dir, diags) } else { None };
            if self.keys.is_some() && self.first.is_none() {
                self.first = spec.clone();
            }
            return spec;
        };
        let mut spec = first.clone();
        let before = diags.len();
        for (key, raw) in keys {
            let mut value = (*raw).clone();
            self.templates.render_into((&mut value, Some(key)), ctx, self.doc, names, diags);
            if diags.len() == before {
                set(&mut spec, key, &value, self.doc, diags);
            }
        }
        if diags.len() > before {
            return None;
        }
        let problems = validate::check(&spec, job_dir, self.doc);
        if problems.is_empty() {
            Some(spec)
        } else {
            diags.extend(problems);
            None
        }
    }
}

/// `f` of `0..len` cut into one contiguous chunk per core (at least [`MIN_CHUNK`] items each), the
/// results in order. Runs on the calling thread when there is one chunk.
pub(super) fn in_chunks<R: Send>(len: usize, f: impl Fn(Range<usize>) -> R + Sync) -> Vec<R> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(len / MIN_CHUNK).max(1);
    if threads == 1 {
        return vec![f(0..len)];
    }
    let size = len.div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> =
            (0..len).step_by(size).map(|start| scope.spawn(move || f(start..(start + size).min(len)))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    })
}

/// The top-level fields decoded on their own, by name: every one of JobSpec's but those the plan is made
/// of (`name`, `vars`, `matrix`: never templated) and `sandbox` (decoded with its kind first).
macro_rules! fields {
    ($($name:ident),*) => {
        const SETTABLE: &[&str] = &[$(stringify!($name)),*];

        /// Decodes `value` as the field `key` of `spec`, at its place in the document; the problem in
        /// `diags` when it does not decode.
        fn set(spec: &mut JobSpec, key: &str, value: &Value, doc: &Document, diags: &mut Vec<Diagnostic>) {
            let at = [Seg::Key(key.to_string())];
            match key {
                $(stringify!($name) => {
                    if let Some(v) = decode(value, &at, &doc.map, diags) {
                        spec.$name = v;
                    }
                })*
                _ => unreachable!("{key} is not settable"),
            }
        }
    };
}
fields!(
    description,
    llm,
    agent,
    setup,
    steps,
    limits,
    cleanup,
    report,
    secrets,
    retries,
    batch,
    verify,
    repeat,
    repo,
    artifacts,
    artifacts_max,
    deliver
);

fn settable(key: &str) -> bool {
    SETTABLE.contains(&key)
}

#[cfg(test)]
mod tests {
    use crate::diagnostic::Source;
    use serde_json::json;

    const JOB: &str = "name: t\nmatrix:\n  n: [1, 2, 3]\n  t: [10m, 20m]\nsandbox: {kind: local}\n\
        llm: {model: 'm-{{ n }}'}\nsetup: ['echo {{ run.index }}']\nsteps:\n  - message: 'hi {{ n }}'\n    timeout: '{{ t }}'\n\
        report: {dir: 'out/{{ run.id }}'}\ncleanup: never\n";

    fn plan(text: &str) -> Result<Vec<crate::job::PlannedRun>, crate::job::JobError> {
        let source = Source { name: "t.yaml".into(), text: text.into() };
        crate::job::plan_text(source, std::path::Path::new("."), &Default::default()).map(|(_, runs)| runs)
    }

    #[test]
    fn every_run_renders_its_own_fields_and_keeps_the_others() {
        let runs = plan(JOB).unwrap();
        assert_eq!(runs.len(), 6);
        for r in &runs {
            let spec = serde_json::to_value(&r.spec).unwrap();
            let m = r.matrix.as_ref().unwrap();
            let (n, t) = (&m["n"], m["t"].as_str().unwrap());
            assert_eq!(spec["llm"]["model"], json!(format!("m-{n}")), "{}", r.id);
            assert_eq!(spec["setup"][0]["run"], json!(format!("echo {}", r.index)), "{}", r.id);
            assert_eq!(spec["steps"][0]["message"], json!(format!("hi {n}")), "{}", r.id);
            assert_eq!(spec["steps"][0]["timeout"], json!(t), "{}", r.id);
            assert_eq!(spec["report"]["dir"], json!(format!("out/{}", r.id)), "{}", r.id);
            assert_eq!((&spec["cleanup"], &spec["sandbox"]["kind"]), (&json!("never"), &json!("local")));
        }
    }

    #[test]
    fn a_later_run_s_problem_points_at_its_own_place() {
        // The first run is sound (and becomes the others' start); the third renders a bad duration.
        let err = plan(&JOB.replace("[10m, 20m]", "[10m, oops]")).unwrap_err();
        let diags: Vec<_> = err.diagnostics().map(|(_, d)| d).collect();
        assert!(diags[0].message.contains("steps[0].timeout") && diags[0].message.contains("oops"), "{diags:?}");
        let span = diags[0].span.unwrap();
        assert_eq!((span.line, span.col), (10, 14), "{diags:?}");
    }

    #[test]
    fn a_plan_made_on_several_threads_is_in_order_and_finds_a_late_problem() {
        // 40 x 50 runs: more than one chunk on a machine with two cores or more.
        let many = JOB
            .replace("[1, 2, 3]", &format!("{:?}", (1..=40).collect::<Vec<_>>()))
            .replace("[10m, 20m]", &format!("{:?}", (1..=50).map(|m| format!("{m}m")).collect::<Vec<_>>()));
        let runs = plan(&many).unwrap();
        assert_eq!(runs.len(), 2000);
        for (i, r) in runs.iter().enumerate() {
            let m = r.matrix.as_ref().unwrap();
            let spec = serde_json::to_value(&r.spec).unwrap();
            assert_eq!(r.index, i + 1);
            assert_eq!(spec["steps"][0]["message"], json!(format!("hi {}", m["n"])), "{}", r.id);
            assert_eq!(spec["report"]["dir"], json!(format!("out/{}", r.id)));
        }
        let err = plan(&many.replace("\"49m\"", "\"oops\"")).unwrap_err();
        let diags: Vec<_> = err.diagnostics().map(|(_, d)| d).collect();
        assert_eq!(diags.len(), 1, "the 40 runs with `oops` share one problem: {diags:?}");
        assert!(diags[0].message.contains("oops"), "{diags:?}");
    }

    #[test]
    fn a_matrix_that_excludes_every_combination_plans_no_run() {
        let none = JOB.replace("  t: [10m, 20m]\n", "  t: [10m]\n  exclude: [{t: 10m}]\n");
        assert_eq!(plan(&none).unwrap().len(), 0);
        // Without templates too, where the one spec every run shares would have been made first.
        let untemplated = "name: t\nmatrix:\n  t: [a]\n  exclude: [{t: a}]\nsandbox: {kind: local}\nllm: {model: m}\n\
            steps:\n  - message: {file: missing.md}\n";
        assert_eq!(plan(untemplated).unwrap().len(), 0);
    }
}
