// Renders a Backstage Software Template the way Backstage's scaffolder does, with npm's nunjucks: reads
// {template, skeleton: {path: text}, parameters, user} as JSON on stdin, writes {inputs: [each step's input],
// files: {path: text}} (fetch:template's output: the skeleton's paths and contents rendered with the values).
//
// As Backstage (plugins/scaffolder-backend, SecureTemplater and NunjucksWorkflowRunner): `${{ }}` variable
// tags, no autoescape; a step input that is one `${{ expression }}` keeps its type (rendered `| dump`, then
// JSON-parsed; an empty result is undefined), any other string is rendered as text.
const nunjucks = require('nunjucks');

const env = new nunjucks.Environment(null, {
  autoescape: false,
  tags: { variableStart: '${{', variableEnd: '}}' },
});

function renderInput(value, context) {
  if (typeof value === 'string') {
    const single = value.trim().match(/^\$\{\{(.*)\}\}$/s);
    if (single && !single[1].includes('}}')) {
      const dumped = env.renderString(`\${{ (${single[1]}) | dump }}`, context);
      return dumped === '' ? undefined : JSON.parse(dumped);
    }
    return env.renderString(value, context);
  }
  if (Array.isArray(value)) return value.map((v) => renderInput(v, context));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, renderInput(v, context)]));
  }
  return value;
}

let body = '';
process.stdin.on('data', (chunk) => { body += chunk; });
process.stdin.on('end', () => {
  const { template, skeleton, parameters, user } = JSON.parse(body);
  const context = { parameters, user: { entity: { metadata: { name: user } } }, steps: {} };
  const inputs = template.spec.steps.map((step) => renderInput(step.input, context));
  const fetch = inputs[template.spec.steps.findIndex((s) => s.action === 'fetch:template')];
  const values = Object.fromEntries(Object.entries(fetch.values).filter(([, v]) => v !== undefined));
  const files = {};
  for (const [path, text] of Object.entries(skeleton)) {
    files[env.renderString(path, { values })] = env.renderString(text, { values });
  }
  process.stdout.write(JSON.stringify({ inputs, files }));
});
