// Many components, ONE connection: each row watches its project with
// useProgress(id, { shared: true }), the list of a tag's running jobs is useProjects;
// all of them share the page's one multiplexed connection to the hub (reference-counted
// subscriptions). Open it as /many.html?projects=a,b,c&tag=team:7.
import { createRoot } from 'react-dom/client';
import { useState } from 'react';
import { useProgress, useProjects } from 'progress-hub-client/react';

function Row({ id }: { id: string }) {
  const { state, error } = useProgress(id, { shared: true });
  if (error) return <li data-testid={`row-${id}`} data-error={error.code}>{id}: {error.code}</li>;
  return (
    <li data-testid={`row-${id}`} data-status={state.status ?? ''}>
      {id} <progress max={100} value={state.progress} /> {state.progress}% {state.status}
    </li>
  );
}

function Tagged({ tag }: { tag: string }) {
  const { tagged, connection } = useProjects({ tag, status: ['active'] });
  return (
    <section>
      <p data-testid="connection" data-status={connection.status}>{connection.status}</p>
      <ul data-testid="tagged">
        {tagged.map((p) => <li key={p.project_id} data-project={p.project_id} data-status={p.status ?? ''}>{p.project_id} {p.progress}%</li>)}
      </ul>
    </section>
  );
}

function Page({ ids, tag }: { ids: string[]; tag: string }) {
  const [shown, setShown] = useState(ids);
  return (
    <main>
      <button data-testid="drop-first" onClick={() => setShown(shown.slice(1))}>drop the first</button>
      <ul>{shown.map((id) => <Row key={id} id={id} />)}</ul>
      {/* The same project twice: one subscription, counted twice. */}
      {shown[0] && <ul data-testid="again"><Row id={shown[0]} /></ul>}
      <Tagged tag={tag} />
    </main>
  );
}

const q = new URLSearchParams(location.search);
createRoot(document.getElementById('root')!).render(<Page ids={(q.get('projects') ?? '').split(',').filter(Boolean)} tag={q.get('tag') ?? 'demo'} />);
