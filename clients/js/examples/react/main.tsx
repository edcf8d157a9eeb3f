import { createRoot } from 'react-dom/client';
import { App } from './App.js';

const projectId = new URLSearchParams(location.search).get('project') ?? 'demo';
createRoot(document.getElementById('root')!).render(<App projectId={projectId} />);
