// Validates the custom resources of a rendered manifest set against their CRD schemas.
// Built-in kinds are checked by kubernetes-validate; it only warns on kinds it does not know,
// so CloudNativePG and KEDA objects are checked here.
//
// Usage: node validate-crds.mjs rendered.yaml [more.yaml ...]   (exit 1 on any failure)
import fs from 'node:fs';
import YAML from 'yaml';
import { ScaledObject, TriggerAuthentication } from '@kubernetes-models/keda/keda.sh/v1alpha1';
import { Cluster, Pooler, ScheduledBackup } from '@kubernetes-models/cloudnative-pg/postgresql.cnpg.io/v1';

const kinds = {
  'keda.sh/v1alpha1/ScaledObject': ScaledObject,
  'keda.sh/v1alpha1/TriggerAuthentication': TriggerAuthentication,
  'postgresql.cnpg.io/v1/Cluster': Cluster,
  'postgresql.cnpg.io/v1/Pooler': Pooler,
  'postgresql.cnpg.io/v1/ScheduledBackup': ScheduledBackup,
};

let bad = 0;
let checked = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of YAML.parseAllDocuments(fs.readFileSync(file, 'utf8'))) {
    if (doc.errors.length > 0) {
      bad++;
      console.log('FAIL', file, 'YAML', doc.errors.map((e) => e.message).join('; '));
      continue;
    }
    const obj = doc.toJSON();
    const group = obj?.apiVersion ?? '';
    const Model = kinds[`${group}/${obj?.kind}`];
    if (!Model) {
      if (group.includes('cnpg.io') || group.includes('keda.sh')) {
        bad++;
        console.log('FAIL', file, obj.kind, obj.metadata?.name, 'kind not known to this check');
      }
      continue;
    }
    checked++;
    try {
      new Model(obj).validate();
      console.log('ok  ', file, obj.kind, obj.metadata?.name);
    } catch (e) {
      bad++;
      console.log('FAIL', file, obj.kind, obj.metadata?.name, e.message);
    }
  }
}
console.log(`crdcheck: ${checked} custom resources checked, ${bad} failed`);
process.exit(bad ? 1 : 0);
